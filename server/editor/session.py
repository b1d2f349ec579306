"""One workspace folder as an editor sees it: its settings, its loop, its ledger, its experiments' files.

The language server keeps one Session per workspace folder and translates LSP to these calls and
back. Nothing here blocks on training, git writes or the LLM: the loop runs as an asyncio task and
reports through `emit` (engine events, the dicts of nightlab.protocol.events).

Must not import: pygls, lsprotocol (lsp/ is the only code that does).
"""
from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any, Callable, Optional

from nightlab.protocol.types import (BestPayload, ExperimentDiff, FileDiff, HunkInfo, LoopStatePayload,
                                     budget_text)

from nightlab.server.loop.engine import Engine
from nightlab.server.changes.hunks import parse_hunks
from nightlab.server.record.ledger import Ledger
from nightlab.server.run.runner import read_curve
from nightlab.server.core.settings import Settings, SettingsError, load_settings
from nightlab.server.record.store import Store, StoreError
from nightlab.server.core.types import Experiment, Progress

log = logging.getLogger(__name__)

# camelCase keys of nightlab.loop.start's argument -> load_settings overrides
START_OVERRIDES = {"agent": "agent", "budgetSeconds": "budget_seconds", "budgetTokens": "budget_tokens",
                   "maxExperiments": "max_experiments", "tag": "tag", "policy": "policy", "slots": "slots",
                   "maxCostUsd": "max_cost_usd"}


class SessionError(Exception):
    """Something the person must fix, said plainly (returned as a command's error)."""


class Session:
    def __init__(self, root: Path, emit: Callable[[dict[str, Any]], None]):
        self.root = Path(root).resolve()
        self.emit = emit
        self.engine: Optional[Engine] = None
        self.task: Optional[asyncio.Task] = None
        self.tag: Optional[str] = None
        self._settings: Optional[Settings] = None
        self._ledger: Optional[Ledger] = None  # one per session: its parsed records are cached

    # ------------------------------------------------------------------ reading

    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.root, {"tag": self.tag})
            except SettingsError as exc:
                raise SessionError(str(exc)) from None
        return self._settings

    def is_workspace(self) -> bool:
        try:
            self.settings()
            return True
        except SessionError:
            return False

    def ledger(self) -> Ledger:
        if self.engine is not None:
            return self.engine.ledger
        s = self.settings()
        folder = self.root / ".nightlab" / s.tag
        if self._ledger is None or self._ledger.dir != folder:
            self._ledger = Ledger(folder, s.metric.name)
        return self._ledger

    def experiments(self) -> list[Experiment]:
        return self.ledger().experiments() if self.is_workspace() else []

    def experiment(self, number: int) -> Experiment:
        exp = self.ledger().get(int(number))
        if exp is None:
            raise SessionError(f"there is no experiment #{number} on tag {self.settings().tag}")
        return exp

    def store(self) -> Store:
        return self.engine.store if self.engine is not None else Store(self.root, self.settings().tag)

    def files(self, number: int) -> tuple[Experiment, dict[str, str], dict[str, str]]:
        """The experiment, and the text of each editable file at its parent and at its commit."""
        exp = self.experiment(number)
        if not exp.commit:
            raise SessionError(f"experiment #{number} has no commit")
        store, out_parent, out_exp = self.store(), {}, {}
        for path in self.settings().files.editable:
            try:
                out_parent[path] = store.read_file(path, exp.parent_commit)
                out_exp[path] = store.read_file(path, exp.commit)
            except StoreError as exc:
                raise SessionError(str(exc)) from None
        return exp, out_parent, out_exp

    def diff(self, number: int) -> ExperimentDiff:
        """The experiment's change: each editable file it changed, at its parent and at its commit, with
        the hunks `accept` numbers."""
        exp, parents, news = self.files(number)
        files = []
        for path, new in news.items():
            if parents[path] == new:
                continue
            hunks = [HunkInfo(index=h.index, parent_start=h.start, parent_end=h.end, experiment_start=h.new_start,
                              experiment_lines=len(h.new_lines), summary=h.summary)
                     for h in parse_hunks(parents[path], new)]
            files.append(FileDiff(path=path, parent=parents[path], experiment=new, hunks=hunks))
        return ExperimentDiff(number=exp.number, parent=exp.parent_commit, commit=exp.commit, files=files)

    def curve(self, number: int, stage: str = "run") -> list[Progress]:
        """The loss samples one run of an experiment recorded (stage "run", "smoke" or "repeat-<k>")."""
        exp = self.experiment(number)
        if stage != "run" and not re.fullmatch(r"smoke|repeat-\d+", stage):
            raise SessionError(f"unknown stage {stage!r}: use run, smoke or repeat-<k>")
        run_dir = self.root / ".nightlab" / "runs" / self.settings().tag / str(exp.number)
        return read_curve(run_dir if stage == "run" else run_dir / stage)

    def state(self, reason: str = "") -> LoopStatePayload:
        exps = self.experiments()
        s = self.settings() if self.is_workspace() else None
        kept = [e for e in exps if e.status == "keep" and e.metric is not None]
        pick = min if (s is None or s.metric.direction == "lower") else max
        best = pick(kept, key=lambda e: e.metric) if kept else None
        baseline = next((e for e in exps if e.meta.get("baseline") and e.metric is not None), None)
        running = sorted(self.engine.trials) if self.engine is not None else []
        return LoopStatePayload(
            state=self.engine.state if self.engine is not None else "idle", reason=reason,
            tag=s.tag if s else "", agent=s.agent.name if s else "",
            budget=budget_text(s.budget.mode, s.budget.seconds, s.budget.tokens) if s else "",
            metric_name=s.metric.name if s else "val_bpb", direction=s.metric.direction if s else "lower",
            best=BestPayload(number=best.number, metric=best.metric) if best else None,
            baseline=baseline.metric if baseline else None, experiments_run=len(exps), running=running,
            cost_usd=sum(float(e.usage.get("cost_usd") or 0) for e in exps), root=str(self.root))

    # ------------------------------------------------------------------ the loop

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.running():
            raise SessionError("the loop is already running in this workspace")
        unknown = set(overrides or {}) - set(START_OVERRIDES)
        if unknown:
            raise SessionError(f"unknown option(s) {', '.join(sorted(unknown))}; known: "
                               f"{', '.join(sorted(START_OVERRIDES))}")
        flat = {START_OVERRIDES[k]: v for k, v in (overrides or {}).items()}
        try:
            settings = load_settings(self.root, flat)
            engine = Engine(settings)
        except (SettingsError, StoreError) as exc:
            raise SessionError(str(exc)) from None
        except Exception as exc:  # unknown agent or policy, a missing key ...
            raise SessionError(f"{type(exc).__name__}: {exc}") from None
        self.engine, self._settings, self.tag = engine, settings, settings.tag
        engine.subscribe(self.emit)
        self.task = asyncio.create_task(self._run(engine))
        return {"state": "idle", "message": "starting the loop", "tag": settings.tag}

    async def _run(self, engine: Engine) -> None:
        try:
            await engine.run()
        except Exception as exc:  # the engine already emitted "errored"; keep the server alive
            log.exception("loop failed")
            self.emit({"type": "message", "level": "error", "text": f"the loop failed: {exc}"})

    def _engine(self) -> Engine:
        if self.engine is None or not self.running():
            raise SessionError("the loop is not running in this workspace")
        return self.engine

    def pause(self) -> dict[str, Any]:
        engine = self._engine()
        engine.pause()
        return {"state": engine.state, "message": "pausing after the running experiment", "tag": engine.settings.tag}

    def resume(self) -> dict[str, Any]:
        engine = self._engine()
        engine.resume()
        return {"state": engine.state, "message": "resumed", "tag": engine.settings.tag}

    async def stop(self) -> dict[str, Any]:
        engine = self._engine()
        engine.stop()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=60)
        return {"state": engine.state, "message": "stopped; an interrupted run goes again on the next start",
                "tag": engine.settings.tag}

    def cancel_run(self, number: int) -> bool:
        """Stop one running experiment (it is recorded as interrupted); the loop goes on."""
        trial = self.engine.trials.get(number) if self.engine is not None else None
        if trial is None:
            return False
        trial.cancel.set()
        return True

    # ------------------------------------------------------------------ review

    def review(self, number: int, verdict: str, note: str = "") -> Experiment:
        """Record the person's verdict (accepted / rejected) on an experiment: a new ledger record,
        the old ones stay (the ledger is append-only)."""
        exp = self.experiment(number)
        exp.meta = {**exp.meta, "review": verdict, **({"review_note": note} if note else {})}
        self.ledger().append(exp)
        return exp

    def rerun(self, number: int) -> dict[str, Any]:
        """Run an experiment's change again (a new number, another look at a noisy result)."""
        from nightlab.server.core.types import Proposal

        engine = self._engine()
        exp, _, files = self.files(number)
        engine._pending.append(Proposal(description=exp.description, edits=[], hypothesis=exp.hypothesis,
                                        agent=exp.agent, meta={"rerun_of": exp.number, "files": files}))
        return {"number": number, "message": f"experiment #{number} queued to run again"}

    def measure_baseline(self) -> dict[str, Any]:
        """Measure the current best again, `repeats` times: a fresh anchor for the noise floor."""
        from nightlab.server.core.types import Proposal

        engine = self._engine()
        engine._pending.append(Proposal(description="baseline (measured again)", edits=[], agent="",
                                        hypothesis="the current best, unchanged", meta={"baseline": True}))
        return {"number": 0, "message": "the baseline (the current best) queued to be measured again"}
