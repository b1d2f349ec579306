"""The one table of benchmarks/gpu_check.sh: reads what its steps left in its work folder and prints
(figure, value) rows, plain text (it also goes to a file with --out).

    .venv/bin/python benchmarks/gpu_check_table.py WORK --mode CUDA --budgets SECONDS TOKENS LOOP_TOKENS

WORK holds time.json and tokens-{1,2,3}.json (trainer_throughput.py --json), loop/ (the workspace of the
loop, its results.tsv under .nightlab/<tag>/), sandbox.txt, steps.txt ("name seconds" lines) and
failed.txt (a failed step a line). A missing figure reads "n/a"; nothing here raises on a failed step.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def device(result: dict) -> str:
    name = result.get("device") or "n/a"
    if name == "cuda":
        try:  # after every run: this process never held a CUDA context while one trained
            import torch

            name = f"cuda ({torch.cuda.get_device_name()}, torch {torch.__version__})"
        except Exception:
            pass
    elif name != "n/a":
        try:
            import torch

            name = f"{name} (torch {torch.__version__})"
        except Exception:
            pass
    return name


def config(result: dict) -> str:
    c = result.get("config") or {}
    if not c:
        return "n/a"
    return (
        f"depth {c.get('DEPTH', '?')}, width {c.get('WIDTH', '?')}, seq {c.get('SEQ_LEN', '?')}, "
        f"{fmt(result.get('tokens_per_step'), ',d', '?')} tok/step, {fmt(result.get('num_params_M'), '.1f', '?')}M "
        f"params, {result.get('tokenizer') or '?'} tokenizer" + (", compiled" if c.get("COMPILE") == "True" else "")
    )


def bpb(result: dict):
    value = (result.get("summary") or {}).get("val_bpb")
    return value if isinstance(value, (int, float)) else None


def loop_rows(loop: Path) -> dict:
    """Counts and best of the loop's results.tsv (autoresearch's format, Nightlab's ledger copy)."""
    files = sorted(loop.glob(".nightlab/*/results.tsv"))
    if not files:
        return {}
    with open(files[0], newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    statuses = [(r.get("status") or "").lower() for r in rows]
    values = []
    for r, s in zip(rows, statuses, strict=True):
        try:
            if s != "crash":
                values.append(float(r.get("val_bpb") or "nan"))
        except ValueError:
            pass
    values = [v for v in values if v == v]
    return {
        "experiments": len(rows),
        "keep": statuses.count("keep"),
        "discard": statuses.count("discard"),
        "crash": statuses.count("crash"),
        "baseline": values[0] if values and statuses[0] != "crash" else None,  # the first row is the baseline
        "best": min(values) if values else None,
    }


def rows(work: Path, mode: str, budgets: list[str]) -> list[tuple[str, str]]:
    seconds, tokens, loop_tokens = budgets
    timed = load(work / "time.json")
    runs = [load(work / f"tokens-{seed}.json") for seed in (1, 2, 3)]
    steps = {}
    for line in (work / "steps.txt").read_text().splitlines() if (work / "steps.txt").exists() else []:
        name, _, value = line.partition(" ")
        steps[name] = value
    failed = [x for x in (work / "failed.txt").read_text().splitlines() if x] if (work / "failed.txt").exists() else []
    sandbox = (work / "sandbox.txt").read_text().strip() if (work / "sandbox.txt").exists() else "n/a"
    loop = loop_rows(work / "loop")
    first = timed or next((r for r in runs if r), {})

    out = [
        ("mode", mode),
        ("device", device(first)),
        ("config", config(first)),
        (f"time mode ({seconds} s): tokens/s steady", fmt(timed.get("tok_per_s_aggregate"), ",.0f")),
        ("time mode: MFU mean", fmt(timed.get("mfu_mean"), ".2f", "n/a") + ("%" if timed.get("mfu_mean") else "")),
        (
            "time mode: step ms p10 / p50 / p90",
            " / ".join(fmt(timed.get(k), ".1f") for k in ("step_ms_p10", "step_ms_p50", "step_ms_p90")),
        ),
        ("time mode: steps, val_bpb", f"{timed.get('steps', 'n/a')}, {fmt(bpb(timed), '.6f')}"),
        ("time mode: peak memory MB", fmt((timed.get("summary") or {}).get("peak_mem_mb"), ",.0f")),
    ]
    values = []
    for seed, run in zip((1, 2, 3), runs, strict=True):
        value = bpb(run)
        if value is not None:
            values.append(value)
        out.append(
            (
                f"token mode ({int(tokens):,d} tok) seed {seed}: val_bpb",
                f"{fmt(value, '.6f')} ({fmt(run.get('tok_per_s_aggregate'), ',.0f')} tok/s, "
                f"wall {fmt(run.get('wall_s'), '.0f')} s)",
            )
        )
    if len(values) >= 2:
        spread = f"{max(values) - min(values):.6f} (max - min); std {statistics.stdev(values):.6f}"
        spread += f"; mean {statistics.mean(values):.6f}"
    else:
        spread = "n/a (fewer than two token runs finished)"
    out.append(("token mode: val_bpb spread (noise)", spread))
    out += [
        (
            "loop: sandbox",
            {"required": "bubblewrap (required)", "off": "UNSANDBOXED (bubblewrap unusable)"}.get(sandbox, sandbox),
        ),
        (f"loop ({int(loop_tokens):,d} tok/exp): experiments", fmt(loop.get("experiments"), "d")),
        ("loop: keep / discard / crash", " / ".join(fmt(loop.get(k), "d") for k in ("keep", "discard", "crash"))),
        ("loop: baseline, best val_bpb", f"{fmt(loop.get('baseline'), '.6f')}, {fmt(loop.get('best'), '.6f')}"),
        (
            "seconds: prepare / time / tokens / loop",
            " / ".join(steps.get(k, "n/a") for k in ("prepare", "time", "tokens", "loop")),
        ),
        ("seconds: total (set-up included)", steps.get("total", "n/a")),
        ("result", "FAILED: " + ", ".join(failed) if failed else "ok"),
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--mode", default="CUDA")
    parser.add_argument("--budgets", nargs=3, default=["?", "0", "0"], metavar=("SECONDS", "TOKENS", "LOOP_TOKENS"))
    args = parser.parse_args(argv)
    table = rows(args.work, args.mode, args.budgets)
    width = max(len(name) for name, _ in table)
    print(f"nightlab gpu_check ({args.mode})")
    print(f"{'figure':<{width}} | value")
    print(f"{'-' * width}-+-{'-' * 40}")
    for name, value in table:
        print(f"{name:<{width}} | {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
