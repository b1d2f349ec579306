"""benchmarks/gpu_check.sh --dry-run: the GPU readiness script's tiny CPU version of every step
(trainer benchmark in time and token mode, three token repeats, a 1-experiment sandboxed loop) ends
with exit 0 and prints its one table, which --out also writes to a file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = (
    "mode",
    "device",
    "config",
    "time mode (2 s): tokens/s steady",
    "time mode: step ms p10 / p50 / p90",
    "time mode: steps, val_bpb",
    "token mode (4,096 tok) seed 1: val_bpb",
    "token mode (4,096 tok) seed 2: val_bpb",
    "token mode (4,096 tok) seed 3: val_bpb",
    "token mode: val_bpb spread (noise)",
    "loop: sandbox",
    "loop (4,096 tok/exp): experiments",
    "loop: keep / discard / crash",
    "loop: baseline, best val_bpb",
    "seconds: prepare / time / tokens / loop",
    "result",
)


@pytest.mark.slow
@pytest.mark.timeout(900)  # every step of the real script, each run judged: minutes on 2 busy cores
def test_gpu_check_dry_run_prints_the_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    table = {}
    for line in done.stdout.splitlines():
        name, sep, value = line.partition(" | ")
        if sep:
            table[name.strip()] = value.strip()
    missing = [row for row in ROWS if row not in table]
    assert not missing, done.stdout
    assert table["result"] == "ok"
    assert table["mode"] == "dry run (CPU)"
    assert table["loop (4,096 tok/exp): experiments"] == "1"
    assert all(table[f"token mode (4,096 tok) seed {s}: val_bpb"][0].isdigit() for s in (1, 2, 3))
    assert (out / "table.txt").read_text() == done.stdout
    assert (out / "loop-results.tsv").exists()


def test_gpu_check_refuses_without_cuda_unless_dry_run(tmp_path: Path) -> None:
    # nvidia-smi shadowed by one that finds no GPU: the script refuses before any set-up
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")
    (fake / "nvidia-smi").chmod(0o755)
    import os

    env = {**os.environ, "PATH": f"{fake}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(ROOT / "benchmarks" / "gpu_check.sh")], cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert "--dry-run" in done.stderr
