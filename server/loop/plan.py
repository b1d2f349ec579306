"""An experiment's runs, from a narrow plan: compile check, smoke run, the full run, repeats and
confirmation runs, each with its own seed. Knows no engine, no ledger, no policy, no git.

The engine builds a `RunPlan` (how to launch, where, the budget, the seed, a cancel token, a progress
callback, a check that the protected files are unchanged and, for Nightlab's own trainer, the
experiment's committed files, which each run's judge measures with: run/judge.py) and a `more` callback that says, from
the metric values so far, whether another run is wanted (the baseline's repeats, the policy's
confirmations). `execute` returns the `Runs`; the engine decides with them and records.
Must not import: pygls, rich, typer, an agent module, the ledger, the store, the engine.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from nightlab.server.core.settings import BudgetSettings
from nightlab.server.core.types import Progress, RunResult, RunStatus
from nightlab.server.run.judge import wants_judge
from nightlab.server.run.launcher import JudgeRequest, Launcher, RunRequest
from nightlab.server.run.processes import compile_check
from nightlab.server.run.summary import crash_summary

SMOKE, RUN = "smoke", "run"
JUDGE_DEADLINE_S = 300.0  # at least, for the judge's evaluation (half the run's deadline when that is more)


@dataclass
class RunPlan:
    launcher: Launcher
    workdir: Path  # the slot's worktree, at the experiment's commit
    runs_dir: Path  # .nightlab/runs/<tag>/<number>: run.log and events.jsonl, a folder per extra run
    command: str
    budget: BudgetSettings
    metric_name: str
    seed: int  # the first full run's; repeat k uses seed + k
    compile_files: list[str] = field(default_factory=list)  # the editable .py files, checked first
    cuda_visible_devices: str | None = None
    threads: int | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    on_progress: Callable[[str, Progress], None] = lambda stage, p: None  # (stage, sample)
    protected_changed: Callable[[], list[str]] = lambda: []  # protected files the run changed
    # The experiment's committed files (path -> content, None where missing), read from its commit; with
    # judge.py among `protected`, every run is judged from them. None: every run's metric is self-reported.
    committed: Callable[[], dict[str, bytes | None]] | None = None
    protected: list[str] = field(default_factory=list)  # the [files] protected

    @property
    def judged(self) -> bool:
        return self.committed is not None and wants_judge(self.protected, self.command, self.metric_name)


@dataclass
class Runs:
    """What an experiment's runs produced. `last` is the run that ended them: the first full run when
    every run succeeded, else the one that failed (or the smoke run, or a compile error)."""

    last: RunResult
    values: list[float] = field(default_factory=list)  # the metric of each successful full run
    seeds: list[int] = field(default_factory=list)
    results: list[RunResult] = field(default_factory=list)  # every full run, in order
    smoke: RunResult | None = None


def request(plan: RunPlan, seed: int, stage: str = RUN, fraction: float = 1.0) -> RunRequest:
    """One run's request: a share of the budget (the smoke run), and a deadline that scales with it."""
    b = plan.budget
    run_dir = plan.runs_dir if stage == RUN else plan.runs_dir / stage
    deadline = b.deadline_seconds if fraction >= 1 else max(30.0, b.deadline_seconds * fraction * 2 + 30)
    judge = None
    if plan.judged and plan.committed is not None:
        files = {path: data for path, data in plan.committed().items() if data is not None}
        judge = JudgeRequest(files=files, deadline_s=max(JUDGE_DEADLINE_S, b.deadline_seconds / 2))
    return RunRequest(
        workdir=plan.workdir,
        command=plan.command,
        log_path=run_dir / "run.log",
        events_path=run_dir / "events.jsonl",
        seed=seed,
        deadline_s=deadline,
        budget_seconds=b.seconds * fraction if b.mode == "time" else None,
        budget_tokens=max(1, int(b.tokens * fraction)) if b.mode == "tokens" else None,
        metric_name=plan.metric_name,
        cuda_visible_devices=plan.cuda_visible_devices,
        threads=plan.threads,
        judge=judge,
    )


async def run_once(plan: RunPlan, seed: int, stage: str = RUN, fraction: float = 1.0) -> RunResult:
    if plan.cancel.is_set():
        return RunResult(status=RunStatus.INTERRUPTED, error="stopped before the run started")
    before = _stamps(plan)
    result = await plan.launcher.launch(
        request(plan, seed, stage, fraction), on_progress=lambda p: plan.on_progress(stage, p), cancel=plan.cancel
    )
    changed = plan.protected_changed()
    after = _stamps(plan)  # a file written and put back has the same bytes but not the same inode times
    changed += [
        f"{p} (written during the run, then restored)" for p in before if before[p] != after[p] and p not in changed
    ]
    if changed and result.status == RunStatus.OK:
        result = replace(
            result,
            status=RunStatus.CRASH,
            error=f"invalid: protected file(s) changed during the run: {', '.join(changed)}",
        )
    return result


def _stamps(plan: RunPlan) -> dict[str, tuple[int, ...] | None]:
    """Each protected file's inode, size and modification and change times in the slot's checkout."""
    out: dict[str, tuple[int, ...] | None] = {}
    for name in plan.protected:
        try:
            st = os.stat(plan.workdir / name)
        except OSError:
            out[name] = None
            continue
        out[name] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


def _value(result: RunResult, name: str) -> float | None:
    value = result.metric(name)
    ok = result.status == RunStatus.OK and value is not None and math.isfinite(value)
    return value if ok else None


async def execute(plan: RunPlan, more: Callable[[list[float]], bool], *, smoke: bool = True, error: str = "") -> Runs:
    """The experiment's runs. `error`: it is already known to be a crash (an edit that did not apply):
    no run is spent. `more(values)`: whether another full run is wanted after these."""
    if not error:
        bad = compile_check(plan.workdir, [p for p in plan.compile_files if p.endswith(".py")])
        error = f"does not compile (no training spent): {bad}" if bad else ""
    if error:
        return Runs(last=RunResult(status=RunStatus.CRASH, error=error))
    fraction = plan.budget.smoke_fraction
    smoke_run = None
    if smoke and fraction > 0:
        smoke_run = await run_once(plan, plan.seed, SMOKE, fraction)
        if smoke_run.status != RunStatus.OK:
            reason = (
                "stopped during the smoke run"
                if smoke_run.status == RunStatus.INTERRUPTED
                else f"smoke run ({fraction:.0%} of the budget): {crash_summary(smoke_run.error)}"
            )
            return Runs(last=replace(smoke_run, error=reason), seeds=[plan.seed], smoke=smoke_run)
    runs = Runs(last=RunResult(status=RunStatus.CRASH), smoke=smoke_run)
    while not runs.values or more(list(runs.values)):
        seed = plan.seed + len(runs.values)
        result = await run_once(plan, seed, RUN if not runs.values else f"repeat-{len(runs.values)}")
        runs.results.append(result)
        runs.seeds.append(seed)
        value = _value(result, plan.metric_name)
        if value is None:
            runs.last = result
            return runs
        runs.values.append(value)
    runs.last = runs.results[0]
    return runs
