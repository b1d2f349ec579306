"""One experiment after its commit: the cheap checks, the smoke run, the run(s) and the verdict.

The engine prepares an experiment (edits applied, committed, recorded as running) and hands it here.
This module runs it as often as the policy asks (baseline repeats for the noise floor, confirmation
runs for ambiguous candidates, each with its own seed), then amends the commit with the verdict,
keeps or discards it in the store and writes the final ledger record.

Must not import: pygls, rich, typer, an agent module.
"""
from __future__ import annotations

import asyncio
import math
import time
import re
from dataclasses import asdict, replace
from datetime import datetime, timezone
from statistics import fmean
from typing import TYPE_CHECKING, Optional

from nightlab.protocol import events as ev

from nightlab.server.run.runner import compile_check
from nightlab.server.core.types import Experiment, Progress, RunResult

if TYPE_CHECKING:
    from nightlab.server.loop.engine import Engine
    from nightlab.server.run.slots import SlotSpec
    from nightlab.server.record.store import Slot


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def crash_summary(error: str) -> str:
    """One line for a crash: the runner's reason plus the exception line of a traceback, if any."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "crashed"
    exc = next((line for line in reversed(lines)
                if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line)), "")
    head = lines[0]
    return (f"{head}: {exc}" if exc and exc != head else head)[:300]


def run_values(exp: Experiment) -> list[float]:
    """The metric of every full run of an experiment (one, unless it was repeated)."""
    runs = exp.meta.get("runs")
    if runs:
        return [float(v) for v in runs]
    return [exp.metric] if exp.metric is not None else []


class Trial:
    """Runs and decides one prepared experiment for its engine."""

    def __init__(self, engine: "Engine", exp: Experiment, slot: "Slot", spec: "SlotSpec"):
        self.engine = engine
        self.exp = exp
        self.slot = slot
        self.spec = spec
        self.cancel = asyncio.Event()
        self.started = time.monotonic()
        self.progress: Optional[Progress] = None  # the latest sample of the running run

    # ------------------------------------------------------------------ running

    async def _run(self, seed: int, subdir: str = "", fraction: float = 1.0) -> RunResult:
        eng, s = self.engine, self.engine.settings
        run_dir = eng.runs_dir / str(self.exp.number) / subdir if subdir else eng.runs_dir / str(self.exp.number)
        seconds = s.budget.seconds * fraction if s.budget.mode == "time" else None
        tokens = max(1, int(s.budget.tokens * fraction)) if s.budget.mode == "tokens" else None
        deadline = s.deadline_seconds if fraction >= 1 else max(30.0, s.deadline_seconds * fraction * 2 + 30)

        def on_progress(p: Progress) -> None:
            self.progress = p
            eng.emit(ev.PROGRESS, number=self.exp.number, progress=asdict(p), stage=subdir or "run")

        if self.cancel.is_set():
            return RunResult(status="interrupted", error="stopped before the run started")
        result = await eng.runner.run(
            self.slot.workdir, eng.command, log_path=run_dir / "run.log", events_path=run_dir / "events.jsonl",
            budget_seconds=seconds, budget_tokens=tokens, seed=seed, deadline_s=deadline,
            cuda_visible_devices=self.spec.cuda_visible_devices, threads=self.spec.threads,
            on_progress=on_progress, cancel=self.cancel)
        changed = self.slot.changed_since(s.files.protected, self.exp.commit)
        if changed and result.status == "ok":
            result = replace(result, status="crash",
                             error=f"invalid: protected file(s) changed during the run: {', '.join(changed)}")
        return result

    async def execute(self, error: str = "") -> Experiment:
        """Compile check, optional smoke run, the full run(s) and the verdict. `error`: the experiment
        is already known to be a crash (an edit that did not apply), no run is spent on it."""
        eng, s, exp = self.engine, self.engine.settings, self.exp
        if not error:
            bad = compile_check(self.slot.workdir, [p for p in s.files.editable if p.endswith(".py")])
            if bad:
                error = f"does not compile (no training spent): {bad}"
        if error:
            return self.finish(RunResult(status="crash", error=error), [], [])
        baseline = bool(exp.meta.get("baseline"))
        seed = s.run.seed
        eng.set_state("running", exp.description)
        if s.budget.smoke_fraction > 0 and not baseline:
            smoke = await self._run(seed, "smoke", s.budget.smoke_fraction)
            exp.meta["smoke"] = {"status": smoke.status, "total_s": round(smoke.total_s, 2)}
            if smoke.status != "ok":
                reason = "stopped during the smoke run" if smoke.status == "interrupted" else \
                    f"smoke run ({s.budget.smoke_fraction:.0%} of the budget): {crash_summary(smoke.error)}"
                return self.finish(replace(smoke, error=reason), [], [seed])
        first = await self._run(seed)
        results, seeds = [first], [seed]
        metric = first.metric(s.metric.name)
        if first.status != "ok" or metric is None or not math.isfinite(metric):
            return self.finish(first, [], seeds)
        values = [metric]
        repeats = eng.policy_repeats if baseline else 0
        while True:
            if baseline:
                if len(values) >= repeats:
                    break
            else:
                decision = eng.policy.decide_runs(values, eng.best_values(), eng.sigma(), s.metric.direction, "ok")
                exp.meta["decision"] = {"verdict": decision.verdict, "z": decision.z, "sigma": decision.sigma}
                if decision.verdict != "confirm":
                    break
                eng.message(f"#{exp.number}: {decision.reason}")
            seed = s.run.seed + len(values)
            extra = await self._run(seed, f"repeat-{len(values)}")
            results.append(extra)
            seeds.append(seed)
            value = extra.metric(s.metric.name)
            if extra.status != "ok" or value is None or not math.isfinite(value):
                return self.finish(extra, values, seeds, results)
            values.append(value)
        return self.finish(first, values, seeds, results)

    # ------------------------------------------------------------------ deciding

    def finish(self, result: RunResult, values: list[float], seeds: list[int],
               results: Optional[list[RunResult]] = None) -> Experiment:
        eng, s, exp = self.engine, self.engine.settings, self.exp
        eng.set_state("deciding", exp.description)
        best = eng.best_values()
        best_mean = fmean(best) if best else None
        metric = fmean(values) if values else None
        exp.run_status = result.status
        exp.metric = metric
        exp.metrics = dict(result.metrics)
        if metric is not None:
            exp.metrics[s.metric.name] = metric
        exp.best_before = best_mean
        exp.delta = (metric - best_mean) if (metric is not None and best_mean is not None) else None
        exp.seeds = seeds
        results = results or [result]
        exp.timings = {"startup_s": result.startup_s, "training_s": result.training_s, "eval_s": result.eval_s,
                       "total_s": sum(r.total_s for r in results)}
        exp.memory_gb = round(max(r.peak_memory_mb for r in results) / 1024, 1)
        exp.error = result.error
        exp.finished_at = now()
        if len(values) > 1:
            exp.meta["runs"] = values
        if result.status == "interrupted":
            exp.status, exp.decision_reason = "interrupted", "stopped during the run; it runs again on the next start"
        elif exp.meta.get("baseline") and values:
            spread = f", runs {', '.join(f'{v:.6f}' for v in values)}" if len(values) > 1 else ""
            exp.status, exp.decision_reason = "keep", f"baseline: {metric:.6f}{spread}"
        elif not values:
            exp.status = "crash"
            exp.decision_reason = (f"killed at the deadline ({s.deadline_seconds:.0f} s)" if result.status == "timeout"
                                   else crash_summary(result.error) if result.error else "crashed")
        else:
            decision = eng.policy.decide_runs(values, best, eng.sigma(), s.metric.direction, "ok")
            exp.status, exp.decision_reason = decision.verdict, decision.reason
            exp.meta["decision"] = {"verdict": decision.verdict, "z": decision.z, "sigma": decision.sigma,
                                    "repeats": decision.repeats}
            if exp.status == "confirm":  # the policy wanted more runs than it allows: not proven
                exp.status = "discard"
        return eng.record(exp, self.slot)
