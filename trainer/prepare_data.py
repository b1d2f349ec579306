"""
The data side of the fixed harness: corpus, train/val split, tokenizers, data cache and loader (and the
summary block's format, which prepare.py prints).
DO NOT CHANGE: the agent edits train.py only. prepare.py imports this module and re-exports its names;
train.py goes through prepare.py (`Harness`), never through this module.

Needs numpy and torch (and `tokenizers` for BPE, `pyarrow` for parquet). Imports nothing from nightlab,
nor from prepare.py (prepare.py is also run as a script, `python prepare.py`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import sys
import sysconfig
import threading
import time
from pathlib import Path

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Constants of the data side (DO NOT CHANGE: every result in the ledger was measured with them)

BPE_VOCAB_SIZE = 8192
BPE_TRAIN_BYTES = 400_000_000   # the BPE tokenizer is trained on at most this much of the train split
VAL_PERCENT = 5                 # share of files (or documents) in the val split, by hash
SPECIAL_TOKENS = ["<|bos|>", "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>"]


def cache_root() -> Path:
    return Path(os.environ.get("NIGHTLAB_CACHE") or Path.home() / ".cache" / "nightlab")


def _progress(msg: str, end: str = "\r") -> None:
    print(f"prepare: {msg}", end=end, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Corpus: documents and a deterministic train/val split

_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def in_val(key: str) -> bool:
    """The split is a pure function of a stable key (a relative path, or file + index)."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return h % 100 < VAL_PERCENT


def stdlib_files() -> tuple[Path, list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    rels = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            if name.endswith(".py"):
                rels.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return root, sorted(rels)


def _text_files(folder: Path) -> list[str]:
    exts = {".txt", ".md", ".py", ".rst", ".text"}
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix in exts
    )


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                yield i, json.loads(line)["text"]


def _read_parquet(path: Path):
    import pyarrow.parquet as pq  # only needed for parquet corpora

    i = 0
    for batch in pq.ParquetFile(path).iter_batches(columns=["text"]):
        for text in batch.column(0).to_pylist():
            yield i, text or ""
            i += 1


def list_sources(source: str) -> tuple[str, list[tuple[Path, str]]]:
    """Resolve a data source (prepare.py's DATA_SOURCE) to (kind, [(file, relative name)]).
    kind: stdlib|text|jsonl|parquet."""
    if source == "stdlib":
        root, rels = stdlib_files()
        return "stdlib", [(root / r, r) for r in rels]
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise SystemExit(f"prepare: data source {path} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for kind, ext in (("parquet", ".parquet"), ("jsonl", ".jsonl")):
        found = [f for f in files if f.suffix == ext]
        if found:
            base = path if path.is_dir() else path.parent
            return kind, [(f, f.relative_to(base).as_posix()) for f in found]
    if path.is_file():
        return "text", [(path, path.name)]
    return "text", [(path / r, r) for r in _text_files(path)]


def iter_documents(kind: str, files: list[tuple[Path, str]]):
    """Yield (split, text). Files of text split by path; jsonl/parquet documents by file + index,
    except autoresearch's climbmix layout (shard_*.parquet), whose last shard is the pinned val shard."""
    pinned_val = None
    if kind == "parquet" and len(files) > 1 and all(Path(r).name.startswith("shard_") for _, r in files):
        pinned_val = max(r for _, r in files)
    for path, rel in files:
        if kind in ("stdlib", "text"):
            text = path.read_bytes().decode("utf-8", errors="replace")
            yield ("val" if in_val(rel) else "train"), text
            continue
        reader = _read_parquet if kind == "parquet" else _read_jsonl
        for i, text in reader(path):
            if pinned_val is not None:
                split = "val" if rel == pinned_val else "train"
            else:
                split = "val" if in_val(f"{rel}#{i}") else "train"
            yield split, text


def corpus_key(source: str, kind: str, files: list[tuple[Path, str]]) -> str:
    h = hashlib.sha256(f"{kind}|{VAL_PERCENT}".encode())
    for path, rel in files:
        st = path.stat()
        h.update(f"{rel}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    name = f"stdlib-py{sys.version_info.major}.{sys.version_info.minor}" if source == "stdlib" else Path(source).name
    return f"{name}-{h.hexdigest()[:10]}"


# ---------------------------------------------------------------------------
# Tokenizers. token_bytes[i] is the number of RAW bytes token i stands for (0 for specials):
# bpb divides by these, so a token that is only part of a UTF-8 character still counts its bytes.


class ByteTokenizer:
    name = "byte"

    def __init__(self):
        self.vocab_size = 256 + len(SPECIAL_TOKENS)
        self.bos_id = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")

    def token_bytes(self) -> np.ndarray:
        return np.array([1] * 256 + [0] * len(SPECIAL_TOKENS), dtype=np.int32)

    def save(self, folder: Path) -> None:
        pass


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters, used by byte-level BPE."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class BPETokenizer:
    name = "bpe"

    def __init__(self, tok):
        self.tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.bos_id = tok.token_to_id(SPECIAL_TOKENS[0])

    @classmethod
    def train(cls, texts, vocab_size: int = BPE_VOCAB_SIZE) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, folder: Path) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(folder / "tokenizer.json")))

    def save(self, folder: Path) -> None:
        self.tok.save(str(folder / "tokenizer.json"))

    def encode(self, text: str) -> np.ndarray:
        return np.array(self.tok.encode(text, add_special_tokens=False).ids, dtype=np.uint16)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        out = self.tok.encode_batch(texts, add_special_tokens=False)
        return [np.array(e.ids, dtype=np.uint16) for e in out]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids])

    def token_bytes(self) -> np.ndarray:
        inverse = {c: b for b, c in _byte_to_unicode().items()}
        specials = set(SPECIAL_TOKENS)
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for piece, idx in self.tok.get_vocab().items():
            out[idx] = 0 if piece in specials else len(piece)  # each char is exactly one raw byte
            assert piece in specials or all(c in inverse for c in piece), piece
        return out


def default_tokenizer_name(device_type: str) -> str:
    return os.environ.get("NIGHTLAB_TOKENIZER") or ("bpe" if device_type == "cuda" else "byte")


# ---------------------------------------------------------------------------
# The data cache: tokenizer + pre-tokenized train/val arrays, keyed by corpus and tokenizer.
# Each document is stored as [BOS] + tokens; the training path only slices these arrays.


def build_cache(source: str, tokenizer: str = "byte") -> Path:
    """Build the cache of `source` once (atomic, locked against concurrent builders) and return its folder."""
    kind, files = list_sources(source)
    if not files:
        raise SystemExit(f"prepare: no documents found in {source}")
    folder = cache_root() / "data" / corpus_key(source, kind, files) / tokenizer
    if (folder / "meta.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{tokenizer}.lock"):
        if (folder / "meta.json").exists():  # another process built it while we waited
            return folder
        tmp = folder.parent / f".{tokenizer}.tmp-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        _build(source, kind, files, tokenizer, tmp, folder)
        os.replace(tmp, folder)
    return folder


@contextlib.contextmanager
def _locked(path: Path):
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent builders expected
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(source: str, kind: str, files, tokenizer: str, out: Path, final: Path) -> None:
    t0 = time.time()
    _progress(f"reading {len(files):,} {kind} files from {source}", end="\n")
    docs: dict[str, list[str]] = {"train": [], "val": []}
    for split, text in iter_documents(kind, files):
        if text:
            docs[split].append(text)
    if not docs["val"] or not docs["train"]:
        raise SystemExit(f"prepare: the corpus at {source} is too small to split into train and val")
    tok: ByteTokenizer | BPETokenizer
    if tokenizer == "byte":
        tok = ByteTokenizer()
    elif tokenizer == "bpe":
        _progress(f"training a BPE tokenizer (vocab {BPE_VOCAB_SIZE}) on the train split", end="\n")
        budget, sample = BPE_TRAIN_BYTES, []
        for text in docs["train"]:
            sample.append(text)
            budget -= len(text)
            if budget <= 0:
                break
        tok = BPETokenizer.train(sample)
    else:
        raise SystemExit(f"prepare: unknown tokenizer {tokenizer!r} (byte | bpe)")
    tok.save(out)
    meta = {"source": source, "kind": kind, "tokenizer": tokenizer, "vocab_size": tok.vocab_size,
            "bos_id": tok.bos_id, "special_tokens": SPECIAL_TOKENS}
    for split in ("train", "val"):
        texts = docs[split]
        parts: list[np.ndarray] = []
        total_bytes = 0
        bos = np.array([tok.bos_id], dtype=np.uint16)
        for i in range(0, len(texts), 256):
            chunk = texts[i : i + 256]
            ids = tok.encode_batch(chunk) if hasattr(tok, "encode_batch") else [tok.encode(t) for t in chunk]
            for arr in ids:
                parts.extend((bos, arr))
            total_bytes += sum(len(t.encode("utf-8")) for t in chunk)
            _progress(f"tokenizing {split}: {min(i + 256, len(texts)):,}/{len(texts):,} documents")
        tokens = np.concatenate(parts)
        np.save(out / f"{split}.npy", tokens)
        meta[f"{split}_tokens"] = int(tokens.size)
        meta[f"{split}_documents"] = len(texts)
        meta[f"{split}_bytes"] = total_bytes
    np.save(out / "token_bytes.npy", tok.token_bytes())
    meta["seconds"] = round(time.time() - t0, 1)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    _progress(f"cache ready in {meta['seconds']}s: {meta['train_tokens']:,} train / "
              f"{meta['val_tokens']:,} val tokens -> {final}", end="\n")


def load_tokenizer(folder: Path):
    meta = json.loads((folder / "meta.json").read_text())
    return ByteTokenizer() if meta["tokenizer"] == "byte" else BPETokenizer.load(folder)


# ---------------------------------------------------------------------------
# Loader: rows sliced from the memory-mapped arrays, BOS first, produced ahead on a thread.


def make_rows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, bos_id: int) -> np.ndarray:
    """Rows of seq_len + 1 tokens: BOS, then the tokens from each start. Position 0 of every row is
    BOS (an attention sink the model can rely on), so any start point is a valid row."""
    idx = starts[:, None] + np.arange(seq_len, dtype=np.int64)[None, :]
    rows = np.empty((len(starts), seq_len + 1), dtype=np.int64)
    rows[:, 0] = bos_id
    rows[:, 1:] = tokens[idx]
    return rows


def batches(tokens: np.ndarray, batch_size: int, seq_len: int, bos_id: int, seed: int, device,
            prefetch: int = 4):
    """Endless (x, y) batches on `device`. Deterministic for a seed; never blocks on Python packing.
    Closing the generator (`.close()`, as Harness.finish does) stops the producing thread and joins it:
    a thread still inside torch (pin_memory) when the interpreter shuts down aborts the process."""
    dev = torch.device(device)
    pin = dev.type == "cuda"
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def produce():
        rng = np.random.default_rng(seed)
        high = len(tokens) - seq_len
        while not stop.is_set():
            rows = torch.from_numpy(make_rows(tokens, rng.integers(0, high, size=batch_size), seq_len, bos_id))
            if pin:
                rows = rows.pin_memory()
            while not stop.is_set():
                try:
                    q.put(rows, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=produce, name="nightlab-loader", daemon=True)
    thread.start()
    try:
        while True:
            rows = q.get().to(dev, non_blocking=pin)
            yield rows[:, :-1], rows[:, 1:]
    finally:
        stop.set()
        thread.join(timeout=10.0)  # it sees `stop` within 0.1 s of its current batch


# ---------------------------------------------------------------------------
# The summary block (prepare.py prints it)

SUMMARY_FORMATS = [
    ("val_bpb", "{:.6f}"), ("training_seconds", "{:.1f}"), ("total_seconds", "{:.1f}"),
    ("peak_vram_mb", "{:.1f}"), ("mfu_percent", "{:.2f}"), ("total_tokens_M", "{:.1f}"),
    ("num_steps", "{:d}"), ("num_params_M", "{:.1f}"), ("depth", "{:d}"),
]


def format_summary(values: dict) -> str:
    """autoresearch's summary block, byte for byte: tools grep it (a judged run's lacks val_bpb)."""
    lines = ["---"]
    for key, fmt in SUMMARY_FORMATS:
        if key not in values:
            continue
        value = int(values[key]) if fmt == "{:d}" else float(values[key])
        lines.append(f"{key + ':':<18}{fmt.format(value)}")
    return "\n".join(lines)
