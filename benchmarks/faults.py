"""Kill the loop at seeded random moments (kill -9) and count what a night would lose.

A throw-away workspace with a stand-in trainer (no torch: each run sleeps a random fraction of a second,
some repeat, some crash, some fork a helper that sleeps on), the noise policy (baseline repeats and
confirmation runs, so kills land in repeats too) and the real `nightlab run` CLI as a subprocess. Each
round starts the loop, waits a seeded random time, kills it with SIGKILL, then counts the training
processes still alive in the loop's folders, and whether any of them is still alive once the next loop
starts training (an orphan that overlaps the next run). After the last kill one clean run recovers.
Then the ledger is read back:

  lost        experiment numbers with a commit ref but no final record, or gaps in the numbering
  duplicated  numbers with two final records, or two results.tsv rows
  orphans     trainings of a killed loop still alive when the next loop trained (summed over the kills);
              also printed: how many were alive right after the kill, before the next start's recovery

    .venv/bin/python benchmarks/faults.py --kills 40 --seed 1

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from nightlab.server.record.ledger import Ledger

TRAIN = """import os, random, subprocess, sys, time
X = 1.0            # the metric
seed = int(os.environ.get("NIGHTLAB_SEED", "0"))
rng = random.Random(seed * 7919 + int(X * 1000))
changed = X != 1.0  # the baseline never crashes (a crashed baseline stops the loop by design)
if changed and rng.random() < 0.15:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # a helper in its group
time.sleep(rng.uniform(0.1, 0.8))
if changed and rng.random() < 0.1:
    sys.exit("crashed on purpose")
print("---")
print(f"val_bpb:          {X + rng.gauss(0, 0.01):.6f}")
"""
TOML = """[run]
command = "python train.py"
sandbox = "off"
[budget]
seconds = 1
timeout_seconds = 20
"""


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout


def workspace(root: Path) -> Path:
    ws = root / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(TRAIN)
    (ws / "prepare.py").write_text("# fixed\n")
    (ws / "program.md").write_text("lower X\n")
    (ws / "nightlab.toml").write_text(TOML)
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")
    return ws


def trainings(ws: Path) -> list[int]:
    """Processes whose working folder is inside the loop's folders (a slot's checkout)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd").startswith(str(ws / ".nightlab")):
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(int(proc.name))
        except OSError:
            pass
    return out


def overlapping(ws: Path, pending: list[int], proc: subprocess.Popen, wait_s: float = 15.0) -> list[int]:
    """Which of `pending` (alive after the last kill) are still alive once the new loop `proc` trains
    (a training of its own appears) or ends: those would overlap its runs. Killed afterwards, so one
    round's orphan does not skew the next."""
    deadline = time.monotonic() + wait_s
    while pending and time.monotonic() < deadline and proc.poll() is None:
        if set(trainings(ws)) - set(pending):
            break
        time.sleep(0.02)
    alive = [pid for pid in pending if pid in trainings(ws)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def loop(ws: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "nightlab.server.cli", "run", "--plain", *args]
    return subprocess.Popen(cmd, cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def count(ws: Path) -> dict[str, int]:
    ledger = Ledger(ws / ".nightlab" / "main")
    records = ledger.records()
    final = Counter(r.number for r in records if r.status != "running")
    latest = {e.number: e for e in ledger.experiments()}
    refs = {
        int(line.rsplit("/", 1)[1])
        for line in git(ws, "for-each-ref", "--format=%(refname)", "refs/nightlab/main").split()
    }
    numbers = sorted(latest)
    gaps = len(set(range(1, max(numbers) + 1)) - set(numbers)) if numbers else 0
    lost = len({n for n in refs if n not in latest or latest[n].status == "running"}) + gaps
    rows = Counter(line.split("\t")[0] for line in ledger.tsv_rows())
    duplicated = sum(c - 1 for c in final.values() if c > 1) + sum(c - 1 for c in rows.values() if c > 1)
    return {
        "experiments": len(latest),
        "lost": lost,
        "duplicated": duplicated,
        "interrupted": sum(e.status == "interrupted" for e in latest.values()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-wait", type=float, default=8.0, help="longest time a loop runs before its kill (s)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    ws = workspace(Path(tempfile.mkdtemp(prefix="nightlab-faults-")))
    orphans = left = 0
    pending: list[int] = []  # trainings alive after the last kill: the next start must end them first
    started = time.monotonic()
    for k in range(args.kills):
        proc = loop(ws)
        overlap = overlapping(ws, pending, proc)
        orphans += len(overlap)
        time.sleep(rng.uniform(0.3, args.max_wait))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)
        pending = trainings(ws)
        left += len(pending)
        print(
            f"kill {k + 1:3d}: {count(ws)['experiments']:4d} experiments, {len(pending)} alive after the kill, "
            f"{len(overlap)} of the last kill's still alive when this loop trained",
            flush=True,
        )
    final = loop(ws, "--max-experiments", "2")
    orphans += len(overlapping(ws, pending, final))
    final.wait(timeout=300)
    figures = count(ws)
    print(
        f"\n{args.kills} kills in {time.monotonic() - started:.0f} s (seed {args.seed}): "
        f"{figures['experiments']} experiments ({figures['interrupted']} interrupted), "
        f"lost {figures['lost']}, duplicated {figures['duplicated']}, orphans {orphans} "
        f"({left} alive right after a kill, before the next start's recovery)"
    )
    print(f"workspace: {ws}")


if __name__ == "__main__":
    main()
