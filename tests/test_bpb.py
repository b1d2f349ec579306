"""bits per byte: data-driven cases, and raw byte counts of BPE tokens."""

import math

import pytest
import torch


def uniform_logits(n_targets, vocab):
    return torch.zeros(1, n_targets, vocab)


# (description, targets, token_bytes of the vocabulary, expected bpb for uniform logits)
LN = math.log
CASES = [
    ("ascii bytes, byte vocab", [104, 105, 33], [1] * 256 + [0] * 4, LN(260) / LN(2)),
    ("a 3-byte token counts 3 bytes", [0, 1], [3, 1, 0], 2 * LN(3) / (LN(2) * 4)),
    ("special tokens: no loss, no bytes", [0, 2, 2, 1], [1, 1, 0], 2 * LN(3) / (LN(2) * 2)),
    ("an invalid UTF-8 fragment counts its raw 2 bytes", [0], [2, 0], LN(2) / (LN(2) * 2)),
]


@pytest.mark.parametrize("name,targets,token_bytes,expected", CASES, ids=[c[0] for c in CASES])
def test_bpb_cases(prepare_module, name, targets, token_bytes, expected):
    vocab = len(token_bytes)
    nats, nbytes = prepare_module.bpb_sums(
        uniform_logits(len(targets), vocab), torch.tensor([targets]), torch.tensor(token_bytes)
    )
    assert prepare_module.bits_per_byte(nats, nbytes) == pytest.approx(expected, rel=1e-6)


def test_perfect_prediction_is_zero_bpb(prepare_module):
    targets = torch.tensor([[5, 7, 9]])
    logits = torch.full((1, 3, 12), -1e4)
    logits[0, torch.arange(3), targets[0]] = 1e4
    nats, nbytes = prepare_module.bpb_sums(logits, targets, torch.ones(12, dtype=torch.int32))
    assert nbytes == 3 and nats == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def bpe(prepare_module):
    text = "naïve café résumé 日本語のテキスト 🙂🙃 ёжик Ελληνικά def f(x): return x ** 2\n" * 40 + "".join(
        chr(c) for c in range(0x4E00, 0x4E00 + 300)
    )
    return prepare_module.BPETokenizer.train([text], vocab_size=600)


TEXTS = ["hello world", "naïve café", "日本語", "🙂 emoji", "mixed ё 日 🙃 text\n", "\x00\x7f"]


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_token_bytes_sum_to_utf8_length(prepare_module, bpe, text):
    ids = bpe.encode(text)
    assert int(bpe.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    byte = prepare_module.ByteTokenizer()
    assert int(byte.token_bytes()[byte.encode(text)].sum()) == len(text.encode("utf-8"))


def test_fragment_tokens_count_raw_bytes_not_replacement_chars(bpe):
    """A token that is not valid UTF-8 alone (part of a character) counts its raw bytes."""
    inverse = {c: b for b, c in __import__("prepare")._byte_to_unicode().items()}
    tb = bpe.token_bytes()
    fragments = []
    for piece, idx in bpe.tok.get_vocab().items():
        if piece.startswith("<|"):
            continue
        raw = bytes(inverse[c] for c in piece)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            fragments.append((idx, raw))
    assert fragments, "the test vocabulary should contain partial UTF-8 tokens"
    for idx, raw in fragments:
        assert tb[idx] == len(raw)
    # the naive count (length of the decoded string) would differ for at least one of them
    assert any(len(bpe.decode([idx]).encode("utf-8")) != len(raw) for idx, raw in fragments)


def test_special_tokens_have_zero_bytes(prepare_module, bpe):
    tb = bpe.token_bytes()
    for name in prepare_module.SPECIAL_TOKENS:
        assert tb[bpe.tok.token_to_id(name)] == 0
    assert (prepare_module.ByteTokenizer().token_bytes()[256:] == 0).all()
