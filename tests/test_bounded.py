"""Bounded resources (issue 11, item 8): a runaway output line, a huge hypothesis, and a run that exits
abnormally after a complete result. Each attack runs the real runner, engine or harness."""

from __future__ import annotations

import asyncio
import shlex
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import Progress, RunResult
from nightlab.server.core.validate import SettingsError
from nightlab.server.loop.engine import Engine
from nightlab.server.run.curve import read_curve
from nightlab.server.run.follow import FileTail
from nightlab.server.run.runner import Runner
from nightlab.server.run.summary import format_summary
from support.agents import Scripted
from support.workspace import STAND_IN, git, knob, make_workspace, merge_toml

PYTHON = shlex.quote(sys.executable)
BLOCK = format_summary({"val_bpb": 1.234567, "training_seconds": 2.5, "num_steps": 5})
MB = 1 << 20

# One line of `{mb}` MB between two step lines, then the summary block: a printed tensor gone wrong.
RUNAWAY = f"""import sys
print("step 00001 (10.0%) | loss: 2.500000", flush=True)
chunk = "x" * {MB}
for _ in range({{mb}}):
    sys.stdout.write(chunk)
sys.stdout.write("\\nstep 00002 (20.0%) | loss: 2.400000\\n")
print({BLOCK!r}, flush=True)
"""


async def run(tmp_path: Path, body: str, runner: Runner | None = None, **kwargs) -> RunResult:
    (tmp_path / "train.py").write_text(body)
    runner = runner or Runner(kill_grace_s=0.5, poll_interval_s=0.2)
    return await runner.run(
        tmp_path,
        f"{PYTHON} train.py",
        log_path=tmp_path / "run" / "run.log",
        events_path=tmp_path / "run" / "events.jsonl",
        budget_seconds=60,
        budget_tokens=None,
        seed=0,
        deadline_s=60,
        **kwargs,
    )


# --------------------------------------------------------------------------- huge stdout
async def test_a_runaway_line_is_cut_from_the_log_and_the_summary_still_read(tmp_path: Path) -> None:
    cap = 2 * MB
    result = await run(tmp_path, RUNAWAY.format(mb=24), Runner(kill_grace_s=0.5, log_max_bytes=cap))
    assert result.status == "ok", result.error
    assert result.metrics["val_bpb"] == 1.234567
    data = Path(result.log_path).read_bytes()
    assert len(data) <= cap + 64 * 1024  # within the cap (one chunk over at most, before a cut)
    head, mark, tail = data.partition(b"\n[nightlab: ")
    assert head.startswith(b"step 00001") and head.endswith(b"x" * 1000) and len(head) == cap // 2
    cut = int(tail.split(b" ", 1)[0].replace(b",", b""))
    words, kept = tail.split(b"]\n", 1)
    assert b"bytes of output cut here" in words and b"[run] log_max_mb" in words and b"cut here" not in kept
    printed = len(b"step 00001 (10.0%) | loss: 2.500000\n\nstep 00002 (20.0%) | loss: 2.400000\n\n") + 24 * MB
    assert len(head) + cut + len(kept) == printed + len(BLOCK)  # what is not in the file is what it says
    assert kept.endswith(BLOCK.encode() + b"\n")  # the tail holds the block, as printed


async def test_a_runaway_line_is_never_held_in_memory(tmp_path: Path) -> None:
    """No events file: the runner follows the output's step lines, and the 24 MB line between them
    must pass through in chunks (before: read, joined and split whole, three times over)."""
    steps: list[Progress] = []
    tracemalloc.start()
    try:
        result = await run(tmp_path, RUNAWAY.format(mb=24), on_progress=steps.append)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "ok", result.error
    assert [p.step for p in steps] == [1, 2]
    assert peak < 8 * MB, f"the runner held {peak / MB:.1f} MB"


def test_file_tail_drops_a_line_too_long_to_hold(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    tail = FileTail(path, split_cr=True)
    with open(path, "wb") as handle:
        handle.write(b"before\n" + b"y" * (3 * MB))
        assert tail.read_lines() == ["before"]
        handle.write(b"y" * (3 * MB) + b"\nafter\r")
    tracemalloc.start()
    try:
        lines = tail.read_lines()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == ["after"]
    assert peak < 4 * MB, f"FileTail held {peak / MB:.1f} MB"


def test_the_settings_cap_reaches_the_loops_runs(tmp_path: Path) -> None:
    """`[run] log_max_mb` caps the log of a run the engine starts (here its baseline's)."""
    train = 'import sys\nsys.stdout.write("z" * 3_000_000 + "\\n")\n' + STAND_IN
    ws = make_workspace(tmp_path, train=train)
    (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), "[run]\nlog_max_mb = 1\n"))
    engine = Engine(load_settings(ws, {"max_experiments": 1}), agent=Scripted([]))
    asyncio.run(engine.run())
    assert [(e.number, e.status, e.metric) for e in engine.ledger.experiments()] == [(1, "keep", 1.0)]
    log = ws / ".nightlab" / "runs" / "main" / "1" / "run.log"
    assert log.stat().st_size <= MB + 64 * 1024 and b"bytes of output cut here" in log.read_bytes()


def test_a_log_cap_below_the_minimum_is_refused(tmp_path: Path) -> None:
    ws = make_workspace(tmp_path)
    (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), "[run]\nlog_max_mb = 0\n"))
    with pytest.raises(SettingsError, match=r"\[run\] log_max_mb must be 0.0625 or more, got 0"):
        load_settings(ws)


def test_the_curve_of_a_log_without_events(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    steps = "".join(f"\rstep {n:05d} ({n}.0%) | loss: {3 - n / 10:.6f}" for n in range(1, 6))
    (run_dir / "run.log").write_text("start\n" + "w" * (3 * MB) + "\n" + steps)  # no line break at the end
    assert [(p.step, p.loss) for p in read_curve(run_dir)] == [(n, pytest.approx(3 - n / 10)) for n in range(1, 6)]


# --------------------------------------------------------------------------- abnormal exit after a result
EXITS = [
    ("SIGABRT", "import os\nos.abort()\n", "then exited with SIGABRT"),
    ("exit code 3", "import sys\nsys.exit(3)\n", "then exited with code 3"),
    ("code 134", "import os\nos._exit(134)\n", "then exited with code 134 (128 + SIGABRT"),
]


@pytest.mark.parametrize("name,ending,words", EXITS, ids=[e[0] for e in EXITS])
async def test_a_complete_result_then_an_abnormal_exit_says_so(tmp_path: Path, name, ending, words) -> None:
    """A crash (nothing says the process reached the end it meant to), whose reason is exactly what
    happened; the metric stays readable in the result."""
    result = await run(tmp_path, f"print({BLOCK!r}, flush=True)\n" + ending)
    assert result.status == "crash"
    assert result.error.startswith(f"complete result (val_bpb 1.234567), {words}"), result.error
    assert result.metrics["val_bpb"] == 1.234567


async def test_an_abnormal_exit_without_a_result_names_the_signal(tmp_path: Path) -> None:
    result = await run(tmp_path, "import os\nprint('starting', flush=True)\nos.abort()\n")
    assert result.status == "crash" and result.error.startswith("killed by signal 6 (SIGABRT)")


# --------------------------------------------------------------------------- a huge hypothesis
def test_a_200_kb_hypothesis_is_committed_and_kept_whole(tmp_path: Path) -> None:
    """A commit message past one argument's limit (128 KB on Linux) goes through a file: before,
    `git commit -m` failed with E2BIG and the loop ended with a traceback."""
    ws = make_workspace(tmp_path)
    hypothesis = "".join(f"reason {i}: a lower X should help, as the last run suggested.\n" for i in range(3500))
    assert len(hypothesis) > 200_000
    proposal = knob("X", "1.0", "0.5")
    proposal.hypothesis = hypothesis
    engine = Engine(load_settings(ws, {"max_experiments": 2}), agent=Scripted([proposal]))
    asyncio.run(engine.run())
    exps = engine.ledger.experiments()
    assert [(e.number, e.status) for e in exps] == [(1, "keep"), (2, "keep")]
    assert exps[1].hypothesis == hypothesis  # the ledger keeps the full text
    body = git(ws, "log", "-1", "--format=%B", "refs/nightlab/main/2")
    assert body.startswith("nightlab #2: X 1.0 -> 0.5") and hypothesis.strip() in body and "verdict: keep" in body


# --------------------------------------------------------------------------- the trainer's loader
def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nightlab-loader" and t.is_alive()]


def test_closing_a_loader_joins_its_thread(prepare_module) -> None:
    import numpy as np

    tokens = np.arange(5000, dtype=np.uint16) % 250
    loader = prepare_module.batches(tokens, batch_size=4, seq_len=16, bos_id=256, seed=0, device="cpu", prefetch=1)
    next(loader)
    time.sleep(0.05)  # the producer has filled the queue and waits to put the next batch
    loader.close()
    assert _loader_threads() == []  # stopped and joined, not left to the interpreter's shutdown


def test_the_harness_stops_its_loaders_before_the_summary(prepare_module, capsys) -> None:
    import torch

    h = prepare_module.Harness(device="cpu", tokenizer="byte")

    class Uniform(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(*x.shape, h.vocab_size)

    h.start(num_params=1, depth=1, flops_per_token=1.0)
    loader = h.batches(4, 16)
    next(loader)
    h.finish(Uniform())
    assert _loader_threads() == []
    assert "val_bpb:" in capsys.readouterr().out
