"""The harness's data side: corpus split, input formats, cache, loader, summary block."""

import json

import numpy as np
import pytest


def test_split_is_deterministic_and_disjoint(prepare_module):
    keys = [f"pkg/mod_{i}.py" for i in range(2000)]
    first = [prepare_module.in_val(k) for k in keys]
    assert first == [prepare_module.in_val(k) for k in keys]
    share = sum(first) / len(keys)
    assert 0.02 < share < 0.08  # VAL_PERCENT = 5


def test_stdlib_corpus_has_no_tests_or_site_packages(prepare_module):
    root, rels = prepare_module.stdlib_files()
    assert len(rels) > 100 and "os.py" in rels
    for rel in rels:
        parts = rel.split("/")
        assert not {"site-packages", "test", "tests", "idle_test"} & set(parts[:-1]), rel


def _docs(prepare_module, source):
    kind, files = prepare_module.list_sources(str(source))
    out = {"train": [], "val": []}
    for split, text in prepare_module.iter_documents(kind, files):
        out[split].append(text)
    return kind, out


def _write_formats(tmp_path):
    """One corpus of 60 documents in every accepted format."""
    docs = [f"document {i}: " + "lorem ipsum " * (i % 7 + 1) for i in range(60)]
    text_dir = tmp_path / "texts"
    text_dir.mkdir()
    for i, d in enumerate(docs):
        (text_dir / f"doc{i:03d}.txt").write_text(d)
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs}), tmp_path / "corpus.parquet")
    shards = tmp_path / "climbmix"
    shards.mkdir()
    for s in range(3):
        pq.write_table(pa.table({"text": docs[s * 20 : (s + 1) * 20]}), shards / f"shard_{s:05d}.parquet")
    return docs, {"text": text_dir, "jsonl": jsonl, "parquet": tmp_path / "corpus.parquet", "climbmix": shards}


@pytest.mark.parametrize("fmt", ["text", "jsonl", "parquet", "climbmix"])
def test_each_input_format(prepare_module, tmp_path, fmt):
    docs, paths = _write_formats(tmp_path)
    kind, split = _docs(prepare_module, paths[fmt])
    assert kind == {"climbmix": "parquet"}.get(fmt, fmt)
    assert sorted(split["train"] + split["val"]) == sorted(docs)
    assert not set(split["train"]) & set(split["val"])
    assert split == _docs(prepare_module, paths[fmt])[1]  # deterministic
    if fmt == "climbmix":  # autoresearch's layout: the last shard is the pinned val shard
        assert split["val"] == docs[40:]


def test_cache_is_built_once_and_reused(prepare_module, tmp_path, monkeypatch):
    monkeypatch.setenv("NIGHTLAB_CACHE", str(tmp_path / "cache"))
    docs, paths = _write_formats(tmp_path)
    folder = prepare_module.prepare(str(paths["jsonl"]), "byte")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["train_documents"] + meta["val_documents"] == 60
    train = np.load(folder / "train.npy")
    assert (train == 256).sum() == meta["train_documents"]  # every document starts with BOS
    stamp = (folder / "train.npy").stat().st_mtime_ns
    assert prepare_module.prepare(str(paths["jsonl"]), "byte") == folder
    assert (folder / "train.npy").stat().st_mtime_ns == stamp


def test_loader_rows_start_with_bos_and_are_deterministic(prepare_module):
    tokens = np.arange(1000, dtype=np.uint16) % 250
    a = prepare_module.batches(tokens, batch_size=4, seq_len=16, bos_id=256, seed=3, device="cpu")
    b = prepare_module.batches(tokens, batch_size=4, seq_len=16, bos_id=256, seed=3, device="cpu")
    for _ in range(3):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert (xa == xb).all() and (ya == yb).all()
        assert (xa[:, 0] == 256).all()
        assert (xa[:, 1:] == ya[:, :-1]).all()  # y is x shifted by one
        assert xa.shape == (4, 16)


def test_eval_rows_are_fixed_windows(prepare_module):
    val = np.arange(100, dtype=np.uint16)
    rows = prepare_module.eval_rows(val, seq_len=10, eval_tokens=50, bos_id=7)
    assert rows.shape == (5, 11)
    assert (rows[:, 0] == 7).all()
    assert rows[1, 1:].tolist() == list(range(10, 20))
    # capped at what the val split holds
    assert prepare_module.eval_rows(val, seq_len=10, eval_tokens=10_000, bos_id=7).shape[0] == 9


from support.summary import REFERENCE_BLOCK  # noqa: E402  (one copy of autoresearch's block for both sides)


def test_summary_block_is_autoresearchs(prepare_module):
    values = dict(
        val_bpb=0.9979,
        training_seconds=300.08,
        total_seconds=325.94,
        peak_vram_mb=45060.21,
        mfu_percent=39.8,
        total_tokens_M=499.63,
        num_steps=953,
        num_params_M=50.33,
        depth=8,
    )
    assert prepare_module.format_summary(values) == REFERENCE_BLOCK
    # the runner parses what the harness prints
    from nightlab.server.run.summary import parse_summary

    assert parse_summary("step 00001 | loss: 2.0\r" + prepare_module.format_summary(values))["val_bpb"] == 0.9979


@pytest.mark.parametrize(
    "mode,env,expected",
    [
        ("time", {"NIGHTLAB_BUDGET_SECONDS": "12"}, ("time", 12.0)),
        ("tokens", {"NIGHTLAB_BUDGET_TOKENS": "5000"}, ("tokens", 5000)),
        ("default", {}, ("time", 60.0)),
    ],
)
def test_budget_from_env(prepare_module, monkeypatch, mode, env, expected):
    monkeypatch.delenv("NIGHTLAB_BUDGET_SECONDS", raising=False)
    monkeypatch.delenv("NIGHTLAB_BUDGET_TOKENS", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    budget = prepare_module.Budget.from_env("cpu")
    assert (budget.mode, budget.amount) == expected


def test_time_budget_excludes_warmup_steps(prepare_module):
    budget = prepare_module.Budget("time", 1.0)
    for step in range(1, prepare_module.WARMUP_STEPS + 1):
        budget.update(step, dt=5.0, tokens=10)
    assert budget.training_seconds == 0 and not budget.done(prepare_module.WARMUP_STEPS)
    budget.update(prepare_module.WARMUP_STEPS + 1, dt=1.5, tokens=10)
    assert budget.done(prepare_module.WARMUP_STEPS + 1) and budget.progress == 1.0
