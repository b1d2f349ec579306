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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nightlab.protocol import events as ev
from nightlab.protocol.convert import budget_text
from nightlab.protocol.types import (
    BestPayload,
    ExperimentCommandResult,
    ExperimentDiff,
    FileDiff,
    HunkInfo,
    LoopCommandResult,
    LoopStatePayload,
)
from nightlab.server.agents.base import AgentError
from nightlab.server.changes.hunks import parse_hunks
from nightlab.server.core.policy import PolicyError
from nightlab.server.core.settings import Settings, SettingsError, load_settings
from nightlab.server.core.types import Experiment, Progress, Review, utc_now
from nightlab.server.loop.engine import Engine
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.lock import EngineBusy, loop_owner
from nightlab.server.record.store import Store, StoreError
from nightlab.server.run.curve import read_curve

log = logging.getLogger(__name__)


class SessionError(Exception):
    """Something the person must fix, said plainly (returned as a command's error). `kind` says whose it
    is: INVALID, the request's (a bad argument, an unknown experiment); CONFLICT, the workspace's state
    (the loop already runs, or does not; a bad nightlab.toml)."""

    INVALID = "invalid"
    CONFLICT = "conflict"

    def __init__(self, message: str, kind: str = CONFLICT):
        super().__init__(message)
        self.kind = kind


def _state_name(state: Any) -> str:
    """A loop state as the protocol spells it (the engine's enum or a plain string)."""
    return str(getattr(state, "value", state))


class Session:
    def __init__(self, root: Path, emit: Callable[[dict[str, Any]], None]):
        self.root = Path(root).resolve()
        self.emit = emit
        self.engine: Engine | None = None
        self.task: asyncio.Task | None = None
        self.tag: str | None = None
        self._settings: Settings | None = None
        self._ledger: Ledger | None = None  # one per session: its parsed records are cached

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
            raise SessionError(f"there is no experiment #{number} on tag {self.settings().tag}", SessionError.INVALID)
        return exp

    def store(self) -> Store:
        if self.engine is not None:
            return self.engine.store
        return Store(self.root, self.settings().tag, branch=self.settings().branch)

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
            hunks = [
                HunkInfo(
                    index=h.index,
                    parent_start=h.start,
                    parent_end=h.end,
                    experiment_start=h.new_start,
                    experiment_lines=len(h.new_lines),
                    summary=h.summary,
                )
                for h in parse_hunks(parents[path], new)
            ]
            files.append(FileDiff(path=path, parent=parents[path], experiment=new, hunks=hunks))
        return ExperimentDiff(number=exp.number, parent=exp.parent_commit, commit=exp.commit, files=files)

    def curve(self, number: int, stage: str = "run") -> list[Progress]:
        """The loss samples one run of an experiment recorded (stage "run", "smoke" or "repeat-<k>")."""
        exp = self.experiment(number)
        if stage != "run" and not re.fullmatch(r"smoke|repeat-\d+", stage):
            raise SessionError(f"unknown stage {stage!r}: use run, smoke or repeat-<k>", SessionError.INVALID)
        run_dir = self.root / ".nightlab" / "runs" / self.settings().tag / str(exp.number)
        return read_curve(run_dir if stage == "run" else run_dir / stage)

    def state(self, reason: str = "") -> LoopStatePayload:
        exps = self.experiments()
        s = self.settings() if self.is_workspace() else None
        best = self.ledger().best(s.metric.direction) if s else None  # the one rule for "best"
        current = self.ledger().current() if s else []  # the lineage the best is of
        baseline = next((e for e in current if e.is_baseline and e.metric is not None), None)
        running = sorted(self.engine.running()) if self.engine is not None else []
        return LoopStatePayload(
            state=self.engine.state if self.engine is not None else "idle",
            reason=reason,
            tag=s.tag if s else "",
            agent=s.agent.name if s else "",
            budget=budget_text(s.budget.mode, s.budget.seconds, s.budget.tokens) if s else "",
            metric_name=s.metric.name if s else "val_bpb",
            direction=s.metric.direction if s else "lower",
            best=BestPayload(number=best.number, metric=best.metric) if best else None,
            baseline=baseline.metric if baseline else None,
            experiments_run=len(exps),
            running=running,
            cost_usd=self.ledger().cost_usd() if s else 0.0,
            root=str(self.root),
        )

    # ------------------------------------------------------------------ the loop

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self, overrides: dict[str, Any] | None = None) -> LoopCommandResult:
        """Start the loop; `overrides` are settings.OVERRIDES names (the CLI's flags) over nightlab.toml."""
        if self.running():
            raise SessionError("the loop is already running in this workspace; stop it first")
        overrides = overrides or {}
        try:
            settings = load_settings(self.root, overrides)
            owner = loop_owner(self.root / ".nightlab" / settings.tag)
            if owner:
                raise EngineBusy(f"another nightlab loop (pid {owner}) is running on tag {settings.tag}; stop it first")
            engine = Engine(settings)
        except SettingsError as exc:  # from an override: the argument's fault; from the file: the workspace's
            raise SessionError(str(exc), SessionError.INVALID if exc.option else SessionError.CONFLICT) from None
        except (AgentError, PolicyError) as exc:  # an unknown agent or policy, bad options, a missing key
            named = overrides.get("agent" if isinstance(exc, AgentError) else "policy")
            raise SessionError(str(exc), SessionError.INVALID if named else SessionError.CONFLICT) from None
        except (StoreError, EngineBusy) as exc:
            raise SessionError(str(exc)) from None
        except Exception as exc:  # unexpected: say it plainly, keep the traceback for the log
            log.exception("starting the loop failed")
            raise SessionError(f"the loop could not start: {exc}") from None
        self.engine, self._settings, self.tag = engine, settings, settings.tag
        engine.subscribe(self.emit)
        self.task = asyncio.create_task(self._run(engine))
        return LoopCommandResult(state="idle", message="starting the loop", tag=settings.tag)

    async def _run(self, engine: Engine) -> None:
        try:
            await engine.run()
        except Exception as exc:  # the engine already emitted "errored"; keep the server alive
            log.exception("loop failed")
            self.emit({"type": ev.MESSAGE, "level": "error", "text": f"the loop failed: {exc}"})

    def _engine(self) -> Engine:
        """The running loop's engine; a state conflict when no loop runs."""
        if self.engine is None or not self.running():
            raise SessionError("the loop is not running in this workspace; start it first")
        return self.engine

    def _result(self, message: str) -> LoopCommandResult:
        """The loop's state now, with what the command did."""
        if self.engine is not None:
            return LoopCommandResult(
                state=_state_name(self.engine.state), message=message, tag=self.engine.settings.tag
            )
        return LoopCommandResult(state="idle", message=message, tag=self.settings().tag if self.is_workspace() else "")

    def pause(self) -> LoopCommandResult:
        """Pause after the running experiments; a loop that is not running stays as it is (no error)."""
        if not self.running():
            return self._result("the loop is not running; nothing to pause")
        self._engine().pause()
        return self._result("pausing after the running experiment")

    def resume(self) -> LoopCommandResult:
        self._engine().resume()
        return self._result("resumed")

    async def stop(self) -> LoopCommandResult:
        """Stop the loop and wait for it; a loop that is not running stays as it is (no error)."""
        if not self.running():
            return self._result("the loop is not running; nothing to stop")
        self._engine().stop()
        if self.task is not None:
            await asyncio.wait([self.task], timeout=60)
        return self._result("stopped; an interrupted run goes again on the next start")

    def cancel_run(self, number: int) -> bool:
        """Stop one running experiment (it is recorded as interrupted); the loop goes on."""
        return self.engine.cancel_run(number) if self.engine is not None else False

    def progress(self, number: int) -> Progress | None:
        """The latest progress sample of a running experiment; None when it is not running (or has
        not reported yet)."""
        return self.engine.running().get(number) if self.engine is not None else None

    # ------------------------------------------------------------------ review

    def review(self, number: int, verdict: str, note: str = "") -> Experiment:
        """Record the person's verdict (accepted / rejected) on an experiment: a new ledger record,
        the old ones stay (the ledger is append-only)."""
        exp = self.experiment(number)
        exp.review, exp.review_note, exp.reviewed_at = Review(verdict), note or exp.review_note, utc_now()
        self.ledger().append(exp)
        return exp

    def rerun(self, number: int) -> ExperimentCommandResult:
        """Run an experiment's change again (a new number, another look at a noisy result)."""
        engine = self._engine()
        exp, _, files = self.files(number)
        engine.queue_rerun(exp, files)
        return ExperimentCommandResult(number=number, message=f"experiment #{number} queued to run again")

    def measure_baseline(self) -> LoopCommandResult:
        """Measure the current best again, `repeats` times: a fresh anchor for the noise floor."""
        engine = self._engine()
        engine.queue_baseline()
        return LoopCommandResult(
            state=_state_name(engine.state),
            tag=engine.settings.tag,
            message="the baseline (the current best) queued to be measured again",
        )
