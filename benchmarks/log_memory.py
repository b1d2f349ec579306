"""What a runaway output costs the loop: one run that prints a single huge line, then a summary block.

The run goes through the local runner as the loop runs it (no events file, so the log is what the
runner follows), in a fresh interpreter per case so its peak RSS is the run's alone. Prints the
runner process's peak RSS, the run's log on disk, the status and the metric it read.

    .venv/bin/python benchmarks/log_memory.py                 # a 300 MB line, the default cap
    .venv/bin/python benchmarks/log_memory.py --mb 300 --cap-mb 8

Prints figures; asserts nothing. To compare with an earlier version, put that version first on
PYTHONPATH (a folder holding nightlab/{server,trainer,protocol}).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = """import sys
chunk = "x" * (1 << 20)
for _ in range({mb}):
    sys.stdout.write(chunk)
sys.stdout.write("\\n---\\nval_bpb:          1.234567\\nnum_steps:        5\\n")
"""


async def one(folder: Path, mb: int, cap_mb: float | None) -> dict:
    from nightlab.server.run.runner import Runner

    (folder / "train.py").write_text(SCRIPT.format(mb=mb))
    options = {"kill_grace_s": 0.5, "poll_interval_s": 0.2}
    if cap_mb is not None and "log_max_bytes" in inspect.signature(Runner).parameters:
        options["log_max_bytes"] = int(cap_mb * (1 << 20))
    runner = Runner(**options)
    started = time.perf_counter()
    result = await runner.run(
        folder,
        f"{shlex.quote(sys.executable)} train.py",
        log_path=folder / "run" / "run.log",
        events_path=folder / "run" / "events.jsonl",
        budget_seconds=60,
        budget_tokens=None,
        seed=0,
        deadline_s=600,
    )
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "status": str(result.status),
        "val_bpb": result.metrics.get("val_bpb"),
        "log_mb": round((folder / "run" / "run.log").stat().st_size / (1 << 20), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=300, help="the line's size in MB (default 300)")
    parser.add_argument("--cap-mb", type=float, default=None, help="[run] log_max_mb (default: the runner's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(asyncio.run(one(Path(tmp), args.mb, args.cap_mb))))
        return
    baseline = subprocess.run(
        [
            sys.executable,
            "-c",
            "import resource, nightlab.server.run.runner; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    argv = [sys.executable, __file__, "--child", "--mb", str(args.mb)]
    if args.cap_mb is not None:
        argv += ["--cap-mb", str(args.cap_mb)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"one {args.mb} MB line, then a summary block (the runner imported alone: {baseline} MB RSS)")
    for key, value in figures.items():
        print(f"  {key:<12} {value}")


if __name__ == "__main__":
    main()
