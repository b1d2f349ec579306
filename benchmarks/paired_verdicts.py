"""Paired verdicts on the real CPU trainer: how much of the seed-to-seed noise a candidate shares with
the best when both run on the same seeds, and what that does to the noise policy's verdicts.

Renders the template's cpu profile into a temporary folder, trains the baseline and a few real changes
(UPPER_CASE knobs of train.py rewritten) at seeds 0..S-1 with a token budget (deterministic on the CPU;
the baseline's seed 0 runs twice to show it), as plain subprocesses with the runner's environment
(`build_env`: NIGHTLAB_BUDGET_TOKENS, NIGHTLAB_SEED). Then prints:
- the seed-to-seed sigma (pooled over every code version's runs) and the paired-difference sd (pooled
  over the changes' differences to the baseline, each about its own mean);
- for each change: the per-seed values, the paired differences, the unpaired z (the old rule's
  statistic: mean difference / (sigma * sqrt(1/n + 1/n))) and the paired t (mean difference / (sd / sqrt n));
- the false-keep rate, the power and the runs per experiment of the paired and of the unpaired rule in
  a simulated session whose trainer has the measured components (simulation.py: metric = mu + seed
  effect of sd sigma_seed + per-(code, seed) noise of sd paired_sd / sqrt 2), for no true change, a
  gain of one seed-sigma and a gain of one paired sd.

    .venv/bin/python benchmarks/paired_verdicts.py                      # ~15 min on 2 shared cores
    .venv/bin/python benchmarks/paired_verdicts.py --tokens 400000 --seeds 4 --change DEPTH=3
    .venv/bin/python benchmarks/paired_verdicts.py --save m.json        # keep the measurements
    .venv/bin/python benchmarks/paired_verdicts.py --load m.json        # the figures again, no training

Prints figures; asserts nothing. Must not import: the engine, the store, an agent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import fmean, stdev

from nightlab.server.core.stats import estimate_sigma
from nightlab.server.run.env import build_env
from nightlab.server.run.summary import parse_summary
from nightlab.trainer.workspace import render, set_constants

DEFAULT_CHANGES = ["MATRIX_LR=0.03", "WARMDOWN_RATIO=0.5"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=150_000, help="token budget per run (default 150,000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..S-1 for every code version (default 3)")
    p.add_argument(
        "--change",
        action="append",
        help=f"a change as KNOB=VALUE (repeatable; default {' and '.join(DEFAULT_CHANGES)})",
    )
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    p.add_argument("--sessions", type=int, default=400, help="simulated sessions per rate (default 400)")
    p.add_argument("--save", type=Path, help="write the measurements to this JSON file")
    p.add_argument("--load", type=Path, help="read measurements from this JSON file instead of training")
    args = p.parse_args(argv)
    args.change = args.change or list(DEFAULT_CHANGES)
    for c in args.change:
        if not re.fullmatch(r"[A-Z_]+=.+", c):
            p.error(f"--change {c!r}: write KNOB=VALUE, e.g. MATRIX_LR=0.03")
    return args


def _literal(text: str) -> object:
    try:
        return json.loads(text.replace("True", "true").replace("False", "false"))
    except ValueError:
        return text


def run_one(folder: Path, seed: int, tokens: int, threads: int) -> tuple[float | None, float]:
    """One training of the train.py in `folder` at `seed`: (val_bpb or None, wall seconds)."""
    env = build_env(os.environ, events_path=None, seed=seed, budget_tokens=tokens, threads=threads)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True)
    summary = parse_summary(done.stdout)
    value = summary.get("val_bpb") if done.returncode == 0 else None
    return value, time.monotonic() - started


def measure(args: argparse.Namespace) -> dict:
    files = render("cpu")
    root = Path(tempfile.mkdtemp(prefix="nightlab-paired-"))
    versions = {"baseline": files["train.py"]}
    for change in args.change:
        name, value = change.split("=", 1)
        versions[change] = set_constants(files["train.py"], {name: _literal(value)})
    jobs = []
    for label, train in versions.items():
        folder = root / re.sub(r"[^A-Za-z0-9_.-]", "_", label)
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(train if name == "train.py" else text, encoding="utf-8")
        jobs += [(label, folder, s) for s in range(args.seeds)]
    jobs.append(("baseline again", root / "baseline", 0))  # determinism: the same seed, the same value
    print(f"{len(jobs)} runs of {args.tokens:,d} tokens, {args.jobs} at a time, in {root}", flush=True)
    started = time.monotonic()
    try:
        # the data cache is built once, before the parallel runs (its lock would serialise them anyway)
        first = run_one(jobs[0][1], jobs[0][2], args.tokens, max(1, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            rest = list(pool.map(lambda j: run_one(j[1], j[2], args.tokens, 1), jobs[1:]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    values: dict[str, dict[str, float | None]] = {}
    walls = []
    for (label, _, seed), (value, wall) in zip(jobs, [first, *rest], strict=True):
        values.setdefault(label, {})[str(seed)] = value
        walls.append(wall)
        print(f"  {label:20s} seed {seed}: {value if value is None else f'{value:.6f}'} ({wall:.0f} s)")
    return {"tokens": args.tokens, "values": values, "wall_s": time.monotonic() - started, "run_s": fmean(walls)}


def analyse(m: dict, sessions: int) -> None:
    values = m["values"]
    base = {int(s): v for s, v in values["baseline"].items() if v is not None}
    again = values.get("baseline again", {}).get("0")
    print(
        f"\nbudget {m['tokens']:,d} tokens; {m.get('run_s', 0):.0f} s a run, {m.get('wall_s', 0) / 60:.1f} min in all"
    )
    if again is not None and 0 in base:
        print(
            f"baseline seed 0 twice: {base[0]:.6f} / {again:.6f} ({'identical' if again == base[0] else 'DIFFERENT'})"
        )
    changes = {k: {int(s): v for s, v in d.items() if v is not None} for k, d in values.items() if "=" in k}
    sigma = estimate_sigma([list(base.values()), *[list(d.values()) for d in changes.values()]])
    diffs = {k: [d[s] - base[s] for s in sorted(d) if s in base] for k, d in changes.items()}
    paired = estimate_sigma(list(diffs.values()))
    if sigma is None or paired is None:
        print("too few runs to estimate the noise: give it --seeds 2 or more")
        return
    print(f"seed-to-seed sigma {sigma:.4f} ({sigma.df:g} df); paired-difference sd {paired:.4f} ({paired.df:g} df)")
    print(f"{'change':22s} {'values':32s} {'differences':28s} {'unpaired z':>10s} {'paired t':>9s}")
    for k, d in diffs.items():
        n = len(d)
        z = -fmean(d) / (sigma * math.sqrt(2 / n)) if n else math.nan
        own = stdev(d) if n > 1 else math.nan
        t = -fmean(d) / (own / math.sqrt(n)) if n > 1 and own > 0 else math.nan
        shown = " / ".join(f"{changes[k][s]:.4f}" for s in sorted(changes[k]))
        print(f"{k:22s} {shown:32s} {' / '.join(f'{x:+.3f}' for x in d):28s} {z:10.1f} {t:9.1f}")
    # the measured components: seed effect var = sigma^2 - tau^2, per-(code, seed) noise tau = paired / sqrt 2
    from nightlab.server.core.simulation import Model, compare, format_rows  # after the training: --save works alone

    tau = paired / math.sqrt(2)
    seed_sd = math.sqrt(max(sigma**2 - tau**2, 0.0))
    model = Model(seed_sd=seed_sd, noise_sd=tau)
    print(f"\nsimulated with the measured components (seed effect sd {seed_sd:.4f}, per-(code, seed) noise {tau:.4f});")
    print(f"{sessions} sessions of 30 candidates per figure")
    for line in format_rows(compare(model, sessions=sessions)):
        print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    m = json.loads(args.load.read_text()) if args.load else measure(args)
    if args.save:
        args.save.write_text(json.dumps(m, indent=1))
    analyse(m, args.sessions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
