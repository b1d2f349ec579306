"""Throughput of the default experiment: trains the template's train.py once and prints what it reached.

Renders the template for a device profile into a temporary folder, runs `python train.py` there as a
real subprocess with the runner's environment (`build_env`: a time budget, a seed, NIGHTLAB_EVENTS),
then reads the events file: the step events after the warm-up steps give tokens/s, MFU and the step
time distribution (step time = tokens per step / the step's tok_per_s; the tokens of a step are
constant, total_tokens_M / num_steps of the summary), the summary gives val_bpb.

    .venv/bin/python benchmarks/trainer_throughput.py --seconds 20            # the CPU profile here
    .venv/bin/python benchmarks/trainer_throughput.py --gpu-autoresearch      # autoresearch's size
    .venv/bin/python benchmarks/trainer_throughput.py --tokens 20000000       # a token budget instead

p90/p10 of the step time is the jitter that a wall-clock budget turns into metric noise
(docs: REFERENCE.md section 2). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from nightlab.server.run.env import build_env
from nightlab.trainer.workspace import detect_profile, render

WARMUP_STEPS = 10  # prepare.py's WARMUP_STEPS: compilation and allocator warm-up, not budgeted
KNOBS = ("DEPTH", "WIDTH", "HEAD_DIM", "SEQ_LEN", "DEVICE_BATCH_SIZE", "TOTAL_BATCH_SIZE", "COMPILE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="training budget in seconds, warm-up steps excluded (default 30)"
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="a token budget (NIGHTLAB_BUDGET_TOKENS) instead of --seconds: deterministic on the CPU",
    )
    parser.add_argument(
        "--profile",
        choices=("cpu", "gpu", "auto"),
        default="auto",
        help="template profile (auto: gpu when CUDA is available)",
    )
    parser.add_argument(
        "--gpu-autoresearch",
        action="store_true",
        help="autoresearch's size: depth 8, width 512, seq 2048, 2^19 tokens a step (the gpu profile)",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "mps"),
        help="force the harness's device (NIGHTLAB_DEVICE); default: what it finds",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=WARMUP_STEPS,
        help="steps left out of the means and percentiles (default 10)",
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="kill the run after this many seconds (default: 3 x budget + 600)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace and print its path")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.gpu_autoresearch:
        if args.profile == "cpu":
            parser.error("--gpu-autoresearch is the gpu profile; drop --profile cpu")
        args.profile = "gpu"
    elif args.profile == "auto":
        args.profile = detect_profile()
    return args


def knobs(train_py: str) -> dict[str, str]:
    """The UPPER_CASE knobs of a rendered train.py, as written."""
    found = {}
    for name in KNOBS:
        match = re.search(rf"^{name}\s*=\s*([^#\n]+)", train_py, re.M)
        if match:
            found[name] = match.group(1).strip()
    return found


def read_events(path: Path) -> list[dict]:
    events = []
    if not path.exists():
        return events
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def run_training(folder: Path, args: argparse.Namespace, console: Console) -> tuple[int, float, Path]:
    events_path = folder / "events.jsonl"
    log_path = folder / "run.log"
    if args.tokens:
        env = build_env(os.environ, events_path=events_path, seed=args.seed, budget_tokens=args.tokens)
    else:
        env = build_env(os.environ, events_path=events_path, seed=args.seed, budget_seconds=args.seconds)
    if args.device:
        env["NIGHTLAB_DEVICE"] = args.device
    timeout = args.timeout or (1200 if args.tokens else 3 * args.seconds + 600)
    started = time.monotonic()
    status = console.status(f"training for {budget_text(args)} ({args.profile} profile)")
    with open(log_path, "wb") as log, status:
        proc = subprocess.Popen(
            [sys.executable, "train.py"],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = -9
    return returncode, time.monotonic() - started, log_path


def figures(events: list[dict], warmup_steps: int, fallback_tokens_per_step: int | None) -> dict:
    start = next((e for e in events if e.get("event") == "start"), {})
    summary = next((e for e in events if e.get("event") == "summary"), {})
    steps = [e for e in events if e.get("event") == "step" and isinstance(e.get("tok_per_s"), (int, float))]
    steady = [e for e in steps if e.get("step", 0) > warmup_steps] or steps
    tokens_per_step = fallback_tokens_per_step
    if summary.get("num_steps"):
        tokens_per_step = round(summary["total_tokens_M"] * 1e6 / summary["num_steps"])
    tok_s = np.array([e["tok_per_s"] for e in steady], dtype=float)
    mfu = np.array([e.get("mfu", 0.0) or 0.0 for e in steady], dtype=float)
    out = {
        "device": start.get("device", "?"),
        "num_params_M": start.get("num_params_M"),
        "tokenizer": start.get("tokenizer"),
        "steps": len(steps),
        "steady_steps": len(steady),
        "tokens_per_step": tokens_per_step,
        "tok_per_s_mean": None,
        "tok_per_s_aggregate": None,
        "mfu_mean": None,
        "step_ms_p10": None,
        "step_ms_p50": None,
        "step_ms_p90": None,
        "p90_over_p10": None,
        "summary": summary,
        "fail": next((e for e in events if e.get("event") == "fail"), None),
    }
    if len(tok_s):
        out["tok_per_s_mean"] = float(tok_s.mean())
        out["mfu_mean"] = float(mfu.mean()) if mfu.any() else None  # 0.0 everywhere: no peak FLOP/s known
        positive = tok_s[tok_s > 0]
        if tokens_per_step and len(positive):
            step_ms = 1000.0 * tokens_per_step / positive
            # All steady tokens over all steady time (the harmonic mean): what a budget actually buys.
            # The summary's own figure divides every token, warm-up included, by the post-warm-up time.
            out["tok_per_s_aggregate"] = float(1000.0 * tokens_per_step * len(step_ms) / step_ms.sum())
            p10, p50, p90 = np.percentile(step_ms, [10, 50, 90])
            out.update(
                step_ms_p10=float(p10), step_ms_p50=float(p50), step_ms_p90=float(p90), p90_over_p10=float(p90 / p10)
            )
    return out


def device_name(device: str) -> str:
    if device != "cuda":
        return device
    try:  # after the run: the parent must not hold a CUDA context while the child trains
        import torch

        return f"cuda ({torch.cuda.get_device_name()})"
    except Exception:
        return device


def budget_text(args: argparse.Namespace) -> str:
    return f"{args.tokens:,d} tokens" if args.tokens else f"{args.seconds:g} s"


def fmt(value, spec: str, missing: str = "n/a") -> str:
    return missing if value is None else format(value, spec)


def table(result: dict, args: argparse.Namespace, config: dict[str, str], wall_s: float) -> Table:
    summary = result["summary"]
    described = (
        f"{args.profile} profile: depth {config.get('DEPTH', '?')}, width {config.get('WIDTH', '?')}, "
        f"seq {config.get('SEQ_LEN', '?')}, {fmt(result['tokens_per_step'], ',d', '?')} tok/step, "
        f"{fmt(result['num_params_M'], '.1f', '?')}M params" + (", compiled" if config.get("COMPILE") == "True" else "")
    )
    mfu = result["mfu_mean"]
    step_ms = " / ".join(fmt(result[k], ".1f") for k in ("step_ms_p10", "step_ms_p50", "step_ms_p90"))
    timings = " / ".join(fmt(summary.get(k), ".1f") for k in ("training_s", "eval_s", "total_s"))
    fail = result["fail"]
    no_bpb = f"none ({'FAIL ' + str(fail.get('reason')) if fail else 'no summary'})"
    rows = [
        ("device", device_name(result["device"])),
        ("config", described),
        ("steps", f"{result['steps']} ({result['steady_steps']} after the first {args.warmup_steps})"),
        ("tokens/s mean (steady)", fmt(result["tok_per_s_mean"], ",.0f")),
        ("tokens/s steady, tokens / time", fmt(result["tok_per_s_aggregate"], ",.0f")),
        ("MFU mean (steady)", f"{mfu:.2f}%" if mfu is not None else "n/a (no peak FLOP/s for this device)"),
        ("step time p10 / p50 / p90", step_ms + " ms"),
        ("step time p90 / p10", fmt(result["p90_over_p10"], ".2f")),
        ("val_bpb", fmt(summary.get("val_bpb"), ".6f", no_bpb)),
        ("training / eval / total s", f"{timings} (wall {wall_s:.1f})"),
        ("peak memory", fmt(summary.get("peak_mem_mb"), ",.0f") + " MB"),
    ]
    if result["steady_steps"] < 20:
        rows.append(
            (
                "note",
                f"only {result['steady_steps']} steady steps: the percentiles are rough; "
                "give it more --seconds or --tokens",
            )
        )
    t = Table(title=f"trainer throughput ({budget_text(args)} budget, seed {args.seed})", show_header=False)
    t.add_column("figure", style="bold")
    t.add_column("value")
    for name, value in rows:
        t.add_row(name, value)
    return t


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    files = render(args.profile)
    config = knobs(files["train.py"])
    folder = Path(tempfile.mkdtemp(prefix="nightlab-throughput-"))
    try:
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        returncode, wall_s, log_path = run_training(folder, args, console)
        events = read_events(folder / "events.jsonl")
        device = next((e.get("device") for e in events if e.get("event") == "start"), None)
        # The harness caps the context at its own SEQ_LEN for the device (256 on the CPU, 2048 on CUDA).
        harness_seq = _harness_seq_len(files["prepare.py"], device or "cpu")
        if harness_seq and config.get("SEQ_LEN", "").isdigit():
            config["SEQ_LEN"] = str(min(int(config["SEQ_LEN"]), harness_seq))
        result = figures(events, args.warmup_steps, fallback_tokens_per_step=_tokens_per_step(config))
        console.print(table(result, args, config, wall_s))
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"args": {k: str(v) for k, v in vars(args).items()}, "config": config, **result, "wall_s": wall_s},
                    indent=2,
                )
            )
        if returncode != 0 or not result["summary"]:
            tail = log_path.read_text(errors="replace").replace("\r", "\n").splitlines()[-20:]
            console.print(f"[red]train.py exited with {returncode}[/red]; last lines of {log_path}:")
            console.print("\n".join(tail), markup=False, highlight=False)
            args.keep = True
            return 1
        return 0
    finally:
        if args.keep:
            console.print(f"workspace kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def _tokens_per_step(config: dict[str, str]) -> int | None:
    """train.py's tokens per optimizer step, for a run that ended before its summary said so."""
    try:
        batch, seq, total = (int(config[k]) for k in ("DEVICE_BATCH_SIZE", "SEQ_LEN", "TOTAL_BATCH_SIZE"))
    except (KeyError, ValueError):
        return None
    return max(1, math.ceil(total / (batch * seq))) * batch * seq


def _harness_seq_len(prepare_py: str, device: str) -> int | None:
    name = "SEQ_LEN_CUDA" if device == "cuda" else "SEQ_LEN_CPU"
    match = re.search(rf"^{name}\s*=\s*(\d+)", prepare_py, re.M)
    return int(match.group(1)) if match else None


if __name__ == "__main__":
    sys.exit(main())
