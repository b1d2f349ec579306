"""What the sandbox costs a run: the same runs through the plain runner and the sandboxed one.

1. A trivial run (a Python that prints a summary block at once), N times each way, interleaved so load
   hits both alike: the per-run wall clock (median, p10, p90) and the difference, which is the cost of
   bubblewrap (its namespaces and mounts) per run.
2. With --real: the default experiment (the CPU template, a fixed token budget, seed 0) once each way:
   val_bpb must be identical (a token budget is deterministic on the CPU) and the training throughput
   the same within noise.

    .venv/bin/python benchmarks/sandbox_overhead.py              # 20 trivial runs each way
    .venv/bin/python benchmarks/sandbox_overhead.py --real       # and one real training each way

Prints figures; asserts nothing. Needs bubblewrap (apt-get install bubblewrap).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from nightlab.server.run.runner import Runner
from nightlab.server.run.sandbox import SandboxedRunner, SandboxSpec, default_caches, probe
from nightlab.trainer.workspace import render

TRIVIAL = 'print("---")\nprint("val_bpb:          1.000000")\n'


async def one(launcher: Runner, ws: Path, n: int, command: str, **budget) -> tuple[float, object]:
    run_dir = ws / ".nightlab" / "runs" / "main" / str(n)
    started = time.perf_counter()
    result = await launcher.run(
        ws,
        command,
        log_path=run_dir / "run.log",
        events_path=run_dir / "events.jsonl",
        seed=0,
        deadline_s=600,
        **budget,
    )
    return time.perf_counter() - started, result


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10)
    return f"median {statistics.median(values) * 1000:7.1f} ms  p10 {q[0] * 1000:7.1f}  p90 {q[-1] * 1000:7.1f}"


async def trivial(runs: int) -> None:
    ws = Path(tempfile.mkdtemp(prefix="nightlab-sbx-"))
    (ws / "train.py").write_text(TRIVIAL)
    plain, boxed = Runner(), SandboxedRunner(SandboxSpec(hide=(ws,), readable=(Path(sys.prefix),)))
    times: dict[str, list[float]] = {"plain": [], "sandboxed": []}
    command = f"{sys.executable} train.py"
    for i in range(runs):
        for name, launcher in (("plain", plain), ("sandboxed", boxed)):
            dt, result = await one(
                launcher, ws, i * 2 + (name == "sandboxed"), command, budget_seconds=1, budget_tokens=None
            )
            assert result.status == "ok", result.error
            times[name].append(dt)
    for name, values in times.items():
        print(f"trivial run, {name:9}: {spread(values)}")
    cost = statistics.median(times["sandboxed"]) - statistics.median(times["plain"])
    print(f"sandbox cost per run (median difference): {cost * 1000:.1f} ms over {runs} runs each")


async def real(tokens: int) -> None:
    ws = Path(tempfile.mkdtemp(prefix="nightlab-sbx-real-"))
    for name, text in render("cpu").items():
        (ws / name).write_text(text)
    caches = default_caches()
    plain = Runner()
    boxed = SandboxedRunner(
        SandboxSpec(hide=(ws,), writable=caches, readable=(Path(sys.prefix), Path(sys.base_prefix)))
    )
    command = f"{sys.executable} train.py"
    for name, launcher in (("plain", plain), ("sandboxed", boxed), ("plain", plain), ("sandboxed", boxed)):
        dt, result = await one(
            launcher, ws, int(time.time() * 1000) % 10**9, command, budget_seconds=None, budget_tokens=tokens
        )
        m = result.metrics
        print(
            f"real run, {name:9}: {result.status} val_bpb {m.get('val_bpb', float('nan')):.6f}  "
            f"training {result.training_s:.2f} s  total {dt:.2f} s  "
            f"{m.get('total_tokens_M', 0) * 1e6 / max(result.training_s, 1e-9):,.0f} tok/s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--real", action="store_true", help="also one real CPU training each way (twice)")
    ap.add_argument("--tokens", type=int, default=100_000)
    args = ap.parse_args()
    why = probe()
    if why:
        sys.exit(f"no sandbox here: {why}")
    asyncio.run(trivial(args.runs))
    if args.real:
        asyncio.run(real(args.tokens))


if __name__ == "__main__":
    main()
