"""The runner's side of the judge: the metric of Nightlab's own trainer comes from a process of its own.

A run is judged when its workspace is Nightlab's trainer: `judge.py` is among the [files] protected,
the command runs `train.py` and the metric is val_bpb (`wants_judge`). Before training, the data cache
is built outside the sandbox (`prepare_data`: `python prepare.py` from the checkout, once per runner
and slot), so training needs no write access to it and its val split can be hidden from training.
Training saves its weights to `<run dir>/model.pt` (NIGHTLAB_WEIGHTS) and its summary block is only
informational (`reported_val_bpb`). After it exits 0, `judge` writes the experiment's committed files
(given by the loop in the request, never read from the worktree training could write) to
`<run dir>/judge/src`, starts `python judge.py` there fresh (sandboxed like training when the runner
is), bounded by its own deadline, and takes val_bpb ONLY from its JSON result; a failed check is a
crash whose reason says what was wrong. It also checks that training kept to its budget by the
runner's own clock (time mode) or the tokens training reports (tokens mode: trusted from it).
Must not import: git, torch, the ledger, the loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from nightlab.server.core.types import RunResult, RunStatus
from nightlab.server.run.launcher import RunRequest
from nightlab.server.run.logcap import CappedLog, start_logged
from nightlab.server.run.processes import die_with_parent, kill_group

JUDGE_SCRIPT = "judge.py"
WEIGHTS_FILE = "model.pt"
TIME_TOLERANCE = (0.25, 10.0)  # training may overrun a time budget by 25 % + 10 s (saving, shutdown) ...
WARMUP_STEPS = 10  # ... plus prepare.py's unbudgeted warm-up steps (compilation), up to WARMUP_SHARE of it
WARMUP_SHARE = (0.5, 30.0)  # at most half the budget or 30 s, whichever is more
_RESULT_MAX = 1 << 20  # a result file larger than this is not the judge's


def wants_judge(protected: Iterable[str], command: str, metric_name: str) -> bool:
    """Whether a workspace's runs are judged: Nightlab's trainer, run through its train.py, measuring val_bpb."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return False
    return JUDGE_SCRIPT in set(protected) and metric_name == "val_bpb" and any(_is_train(a) for a in argv)


def _is_train(arg: str) -> bool:
    return Path(arg).name == "train.py"


@dataclass(frozen=True)
class JudgePaths:
    run_dir: Path
    weights: Path  # training writes it (NIGHTLAB_WEIGHTS)
    src: Path  # the committed files, written after training
    out: Path  # the judge's result: the one file it may write
    log: Path  # its output


def paths(r: RunRequest) -> JudgePaths:
    run_dir = r.log_path.parent
    folder = run_dir / "judge"
    return JudgePaths(run_dir, run_dir / WEIGHTS_FILE, folder / "src", folder / "result.json", folder / "judge.log")


def script_argv(command: str, script: Path, *args: str) -> list[str]:
    """The run command with train.py swapped for another script of the trainer (same interpreter, uv or not)."""
    argv = shlex.split(command)
    i = next(i for i, a in enumerate(argv) if _is_train(a))
    return [*argv[:i], str(script), *args]


def _remove(path: Path) -> None:
    # Training could write the run dir: what it left at these names (a link, a folder) goes, never followed.
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def clear(p: JudgePaths) -> None:
    """Before training: no stale weights or verdict of an earlier run in this folder."""
    _remove(p.weights)
    _remove(p.out.parent)


def write_sources(p: JudgePaths, files: Mapping[str, bytes]) -> None:
    _remove(p.out.parent)
    for name, data in files.items():
        target = (p.src / name).resolve()
        if p.src.resolve() not in target.parents:
            continue  # a path that climbs out of the folder is not a workspace file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    p.out.write_bytes(b"")  # the sandbox binds it writable: it must exist


# --------------------------------------------------------------------------- the data cache
async def prepare_data(r: RunRequest, env: dict[str, str]) -> tuple[Path | None, str]:
    """`python prepare.py` from the checkout, outside the sandbox: the cache's folder, or why it failed."""
    argv = script_argv(r.command, r.workdir / "prepare.py")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(r.workdir),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=max(600.0, r.deadline_s))
    except asyncio.TimeoutError:
        await kill_group(proc.pid, 3.0)
        return None, "preparing the data cache (python prepare.py) ran past its deadline"
    text = out.decode("utf-8", "replace")
    folder = next((line[7:].strip() for line in text.splitlines() if line.startswith("cache: ")), "")
    if proc.returncode != 0 or not folder:
        tail = "\n".join(text.strip().splitlines()[-5:])
        return None, f"preparing the data cache (python prepare.py) failed (exit {proc.returncode}):\n{tail}"
    return Path(folder), ""


def data_key(r: RunRequest) -> tuple[str, str | None]:
    """Which data cache a run reads: one per checkout and devices (the tokenizer follows the device)."""
    return (str(r.workdir), r.cuda_visible_devices)


DATA_FILES = ("meta.json", "token_bytes.npy", "val.npy")  # what the judge's number is computed from


def fingerprint(folder: Path) -> str:
    """A hash of the cache's files the metric reads: training must not change them (without the sandbox,
    nothing else stops it), so the runner compares it before the judge starts."""
    digest = hashlib.sha256()
    for name in DATA_FILES:
        with open(folder / name, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        digest.update(name.encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- the budget, by the runner's clock
def budget_problem(r: RunRequest, clock: tuple[float, float], reported: Mapping[str, object]) -> str:
    """Why training did not keep to its budget, or "". `clock`: the runner's clock, from the first step it
    saw to the process's exit, and of that the warm-up steps' share (to the first step past them), which
    the budget does not count (compilation): allowed up to half the budget or 30 s, whichever is more, so
    a run cannot hide training in them. A token count comes from training itself (nothing else counts)."""
    clock_s, warmup_s = clock
    if r.budget_seconds is not None:
        share, extra = TIME_TOLERANCE
        warmup = min(max(0.0, warmup_s), max(r.budget_seconds * WARMUP_SHARE[0], WARMUP_SHARE[1]))
        limit = r.budget_seconds * (1 + share) + extra + warmup
        if clock_s > limit:
            return (
                f"invalid: training ran {clock_s:.1f} s by the runner's clock, over its budget of "
                f"{r.budget_seconds:g} s (allowed: {share:.0%} + {extra:g} s + {warmup:.1f} s of warm-up steps "
                f"= {limit:.1f} s)"
            )
    if r.budget_tokens is not None:
        tokens, steps = _number(reported.get("tokens")), _number(reported.get("num_steps"))
        if tokens is None:
            return "invalid: training reported no token count (the events summary's tokens)"
        step = tokens / steps if steps else 0.0
        if tokens > r.budget_tokens + step:
            return (
                f"invalid: training reports {int(tokens):,} tokens, over its budget of {r.budget_tokens:,} "
                f"(allowed: one step more, {int(step):,} tokens)"
            )
    return ""


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------- the judge's process
async def _run(argv: list[str], cwd: Path, env: dict[str, str], p: JudgePaths, deadline_s: float) -> str:
    """Runs the judge to its end or its deadline; returns "" or why it did not finish."""
    proc, pump = await start_logged(argv, cwd, env, CappedLog(p.log, 1 << 20), lambda lines: None)
    try:
        await asyncio.wait_for(proc.wait(), timeout=deadline_s)
    except asyncio.TimeoutError:
        return f"the judge ran past its deadline ({deadline_s:g} s) and was killed"
    finally:
        await kill_group(proc.pid, 3.0)  # whatever train.py's import left running goes with it
        await asyncio.to_thread(pump.finish, 2.0)
    if proc.returncode != 0:
        tail = "\n".join(p.log.read_text("utf-8", "replace").strip().splitlines()[-8:])
        return f"the judge failed (exit {proc.returncode}):\n{tail}"
    return ""


def _changed(data: tuple[Path, str]) -> bool:
    try:
        return fingerprint(data[0]) != data[1]
    except OSError:
        return True


def read_verdict(out: Path) -> dict | str:
    """The judge's result, or why there is none."""
    try:
        if out.stat().st_size > _RESULT_MAX:
            return "the judge's result is too large to be its own"
        data = json.loads(out.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return f"the judge wrote no readable result ({type(exc).__name__})"
    return data if isinstance(data, dict) else "the judge's result is not a JSON object"


def informational(result: RunResult, metric_name: str) -> RunResult:
    """Training's own number moves aside: it is kept, as reported_<metric>, and never used."""
    metrics = dict(result.metrics)
    if metric_name in metrics:
        metrics[f"reported_{metric_name}"] = metrics.pop(metric_name)
    return replace(result, metrics=metrics, self_reported=False)


async def judge(
    r: RunRequest,
    result: RunResult,
    *,
    clock: tuple[float, float],
    reported: Mapping[str, object],
    argv_for: Callable[[list[str], JudgePaths], list[str]],
    env: dict[str, str],
    data: tuple[Path, str] | None = None,
) -> RunResult:
    """The judged result of a training run that exited 0 (`result`, its metric already moved aside).
    `data`: the data cache prepared before training and its fingerprint then."""
    assert r.judge is not None
    p = paths(r)

    def crash(reason: str) -> RunResult:
        error = reason + (f"\n(judge log: {p.log})" if p.log.exists() else "")
        return replace(result, status=RunStatus.CRASH, error=error)

    problem = budget_problem(r, clock, reported)
    if problem:
        return crash(problem)
    if data is not None and await asyncio.to_thread(_changed, data):
        return crash(
            f"invalid: the data cache the metric reads changed during the run ({', '.join(DATA_FILES)} in {data[0]})"
        )
    if not p.weights.is_file() or p.weights.is_symlink():
        return crash(f"invalid: training exited 0 but saved no weights to {p.weights} (Harness.finish saves them)")
    write_sources(p, r.judge.files)
    if not (p.src / JUDGE_SCRIPT).is_file():
        return crash(f"the experiment's commit has no {JUDGE_SCRIPT} to judge it with")
    argv = script_argv(r.command, p.src / JUDGE_SCRIPT, "--weights", str(p.weights), "--out", str(p.out))
    started = asyncio.get_running_loop().time()
    why = await _run(argv_for(argv, p), p.src, env, p, r.judge.deadline_s)
    judge_s = asyncio.get_running_loop().time() - started
    verdict = read_verdict(p.out) if not why else why
    if isinstance(verdict, str):
        return crash(verdict)
    metrics = {**result.metrics, "judge_seconds": round(judge_s, 3)}
    value = _number(verdict.get("val_bpb"))
    if verdict.get("ok") is not True or value is None or not math.isfinite(value) or value <= 0:
        return replace(crash(str(verdict.get("reason") or "invalid: the judge gave no val_bpb")), metrics=metrics)
    metrics[r.metric_name] = value
    eval_s = _number(verdict.get("eval_seconds")) or 0.0
    return replace(result, metrics=metrics, eval_s=eval_s, total_s=result.total_s + judge_s)
