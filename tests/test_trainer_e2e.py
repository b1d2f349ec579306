"""The default experiment end to end: real `python train.py` runs on the CPU (seconds each)."""

import re
import subprocess
import sys

import pytest

from nightlab.trainer.workspace import copy_template
from support.workspace import run_train

pytestmark = pytest.mark.slow

BLOCK = re.compile(r"^---\nval_bpb:\s+(\d+\.\d{6})\n", re.M)


def val_bpb(proc) -> float:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    match = BLOCK.search(proc.stdout)
    assert match, proc.stdout[-2000:]
    return float(match.group(1))


@pytest.fixture
def workspace(tmp_path):
    copy_template(tmp_path)
    return tmp_path


def test_token_budget_is_reproducible(workspace):
    env = {"NIGHTLAB_BUDGET_TOKENS": "16384", "NIGHTLAB_SEED": "7"}
    first, second = run_train(workspace, env), run_train(workspace, env)
    assert f"{val_bpb(first):.6f}" == f"{val_bpb(second):.6f}"
    assert "num_steps:        4" in first.stdout
    other = run_train(workspace, {**env, "NIGHTLAB_SEED": "8"})
    assert val_bpb(other) != val_bpb(first)  # the seed matters, so the equality above means something


def test_editable_code_cannot_change_the_measurement(workspace):
    """A train.py with another batch size and a forward that returns a bogus loss is measured the same."""
    env = {"NIGHTLAB_BUDGET_TOKENS": "0", "NIGHTLAB_SEED": "3"}  # no training: identical weights
    reference = val_bpb(run_train(workspace, env))
    source = (workspace / "train.py").read_text()
    tampered = source.replace("DEVICE_BATCH_SIZE = 16", "DEVICE_BATCH_SIZE = 3")
    tampered = tampered.replace(
        "        return logits\n", "        return logits, torch.zeros(())  # claims a perfect loss\n"
    )
    tampered = tampered.replace("logits = step_model(x)", "logits, _ = step_model(x)")
    assert tampered.count("claims a perfect loss") == 1 and "DEVICE_BATCH_SIZE = 3" in tampered
    (workspace / "train.py").write_text(tampered)
    assert val_bpb(run_train(workspace, env)) == reference


def test_nan_prints_fail_and_exits_1(workspace):
    source = (workspace / "train.py").read_text()
    (workspace / "train.py").write_text(
        source.replace("(loss / accum).backward()", "(loss / accum).backward(); loss = loss * float('nan')")
    )
    proc = run_train(workspace, {"NIGHTLAB_BUDGET_TOKENS": "16384"})
    assert proc.returncode == 1
    assert "\nFAIL\n" in proc.stdout and "val_bpb:" not in proc.stdout


def test_events_file(workspace, tmp_path_factory):
    import json

    events = tmp_path_factory.mktemp("ev") / "events.jsonl"
    proc = run_train(workspace, {"NIGHTLAB_BUDGET_TOKENS": "16384", "NIGHTLAB_EVENTS": str(events)})
    bpb = val_bpb(proc)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "summary"
    steps = [e for e in lines if e["event"] == "step"]
    assert len(steps) == 4
    assert {"step", "elapsed_s", "loss", "tok_per_s", "mfu", "lr"} <= set(steps[0])
    assert f"{lines[-1]['val_bpb']:.6f}" == f"{bpb:.6f}"


def test_init_makes_a_workspace_that_trains(tmp_path):
    ws = tmp_path / "ws"
    proc = subprocess.run(
        [sys.executable, "-m", "nightlab.server.cli", "init", str(ws), "--profile", "cpu"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("prepare.py", "train.py", "program.md", "nightlab.toml", ".gitignore"):
        assert (ws / name).exists()
    log = subprocess.run(["git", "log", "--oneline"], cwd=ws, capture_output=True, text=True).stdout
    assert "nightlab init" in log
    assert val_bpb(run_train(ws, {"NIGHTLAB_BUDGET_SECONDS": "2"})) < 8.5
    again = subprocess.run(
        [sys.executable, "-m", "nightlab.server.cli", "init", str(ws)], capture_output=True, text=True
    )
    assert again.returncode == 1 and "already has" in again.stderr


def test_init_inside_an_ignored_folder_makes_its_own_repository(tmp_path):
    outer = tmp_path / "clone"
    outer.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=outer, check=True)
    (outer / ".gitignore").write_text("/demo/\n")
    proc = subprocess.run(
        [sys.executable, "-m", "nightlab.server.cli", "init", str(outer / "demo")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=outer / "demo", capture_output=True, text=True
    ).stdout.strip()
    assert top == str(outer / "demo")


@pytest.mark.parametrize("tokenizer", ["byte", "bpe"])
def test_untrained_model_scores_exactly_uniform(workspace, prepare_module, tokenizer):
    """The output head starts at zero, so an untrained model predicts the uniform distribution: its
    val_bpb must be log2(vocab) bits per token spread over the raw bytes of the scored tokens, exactly.
    This checks the whole path: cache, eval windows, special-token masking and byte counts (BPE too)."""
    import math

    import numpy as np

    proc = run_train(workspace, {"NIGHTLAB_BUDGET_TOKENS": "0", "NIGHTLAB_TOKENIZER": tokenizer})
    measured = val_bpb(proc)
    folder = prepare_module.prepare(tokenizer=tokenizer)
    meta = __import__("json").loads((folder / "meta.json").read_text())
    rows = prepare_module.eval_rows(
        np.load(folder / "val.npy"), prepare_module.SEQ_LEN_CPU, prepare_module.EVAL_TOKENS_CPU, meta["bos_id"]
    )
    nbytes = np.load(folder / "token_bytes.npy")[rows[:, 1:]]
    expected = math.log2(meta["vocab_size"]) * (nbytes > 0).sum() / nbytes.sum()
    assert measured == pytest.approx(expected, abs=2e-6)
