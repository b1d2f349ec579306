"""One workspace folder as an editor sees it: its settings, its loop, its ledger, its experiments' files.

The language server keeps one Session per workspace folder and translates LSP to these calls and
back. The loop is a process of its own (`nightlab run`, one per tag): Start launches it detached
(control/launch.py) and the session attaches to it (link.py), as it does on open to a loop already
running; closing the editor lets go of it and it goes on. Its events reach `emit` (the dicts of
nightlab.protocol.events) as they happen. Nothing here blocks on training, git writes or the LLM.

Must not import: pygls, lsprotocol (lsp/ is the only code that does).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nightlab.protocol import control as c
from nightlab.protocol import events as ev
from nightlab.protocol.convert import budget_text
from nightlab.protocol.types import (
    BestPayload,
    ClusterPayload,
    ExperimentCommandResult,
    ExperimentDiff,
    FileDiff,
    HunkInfo,
    LoopCommandResult,
    LoopStatePayload,
)
from nightlab.server.agents.base import AgentError
from nightlab.server.changes.hunks import parse_hunks
from nightlab.server.control.client import wait_gone
from nightlab.server.control.launch import LaunchFailed, launch
from nightlab.server.core.policy import PolicyError
from nightlab.server.core.settings import Settings, SettingsError, lineage_settings, load_settings
from nightlab.server.core.types import Experiment, Progress, Review, utc_now
from nightlab.server.core.validate import LineageSettings
from nightlab.server.editor.convert import model_of, progress_from, run_args
from nightlab.server.editor.lineages import Lineages
from nightlab.server.editor.link import LinkError, LoopLink
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


class Session:
    def __init__(self, root: Path, emit: Callable[[dict[str, Any]], None]):
        self.root = Path(root).resolve()
        self.emit = emit
        self.link: LoopLink | None = None  # to the folder's loop process, once its settings read
        self._starting = False
        self.tag: str | None = None
        self._settings: Settings | None = None
        self._ledger: Ledger | None = None  # one per session: its parsed records are cached
        self._base: Settings | None = None  # nightlab.toml's, with all its [[lineage]] tables
        self._lineages = Lineages(self.root)

    # ------------------------------------------------------------------ reading

    def settings(self) -> Settings:
        """The folder's settings; in a workspace with [[lineage]] tables, the shown lineage's (the first
        until another is chosen): its tag, budget and slots."""
        if self._settings is None:
            try:
                base = self._base = load_settings(self.root, {"tag": self.tag})
            except SettingsError as exc:
                raise SessionError(str(exc)) from None
            shown = self._shown(base)
            self._settings = lineage_settings(base, shown) if shown is not None else base
        return self._settings

    def _shown(self, base: Settings) -> LineageSettings | None:
        """The lineage this session follows: the one chosen, else the first; None without [[lineage]]."""
        return next((lin for lin in base.lineages if lin.name == self.tag), base.lineages[0] if base.lineages else None)

    def lineage_names(self) -> list[str]:
        self.settings()
        return [lin.name for lin in self._base.lineages] if self._base is not None else []

    async def show_lineage(self, name: str) -> LoopStatePayload:
        """Follow lineage `name` of the folder's loop (its experiments, events and commands) from now on."""
        names = self.lineage_names()
        if name not in names:
            have = ", ".join(names) or "none ([[lineage]] tables in nightlab.toml make them)"
            raise SessionError(f"no lineage {name!r} in this workspace; it has {have}", SessionError.INVALID)
        if self.settings().tag != name:
            await self.detach()
            self.tag, self._settings, self._ledger = name, None, None
            await self.attach()
        return self.state()

    def is_workspace(self) -> bool:
        try:
            self.settings()
            return True
        except SessionError:
            return False

    def ledger(self) -> Ledger:
        """A reader of the tag's ledger (the loop process writes it; the parsed records are cached)."""
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
        """Where the folder's loop stands, with the settings in effect: the running loop's own (from its
        process), else nightlab.toml's (what Start would use without overrides)."""
        exps = self.experiments()
        s = self.settings() if self.is_workspace() else None
        best = self.ledger().best(s.metric.direction) if s else None  # the one rule for "best"
        current = self.ledger().current() if s else []  # the lineage the best is of
        baseline = next((e for e in current if e.is_baseline and e.metric is not None), None)
        link = self.link
        up = link is not None and link.attached
        hello = link.snapshot if up and link is not None else None
        run = hello.settings if hello is not None else None
        died = bool(link is not None and link.died and not up)
        return LoopStatePayload(
            state=link.state if link is not None else "idle",
            reason=reason or (hello.reason if hello else "") or (link.died if died and link else ""),
            tag=s.tag if s else "",
            agent=run.agent if run else (s.agent.name if s else ""),
            budget=run.budget if run else (budget_text(s.budget.mode, s.budget.seconds, s.budget.tokens) if s else ""),
            metric_name=s.metric.name if s else "val_bpb",
            direction=s.metric.direction if s else "lower",
            best=BestPayload(number=best.number, metric=best.metric) if best else None,
            baseline=baseline.metric if baseline else None,
            experiments_run=len(exps),
            running=link.running if up and link is not None else [],
            cost_usd=self.ledger().cost_usd() if s else 0.0,
            root=str(self.root),
            policy=run.policy if run else (s.policy.name if s else ""),
            model=run.model if run else (model_of(s) if s else None),
            sandbox=run.sandbox if run else (s.run.sandbox if s else ""),
            baseline_repeats=run.baseline_repeats if run else None,
            max_experiments=run.max_experiments if run else (s.run.max_experiments if s else None),
            pid=hello.pid if hello else None,
            log=hello.log if hello else None,
            died=died,
            lineages=self._lineages.payloads(self._base) if s and self._base is not None else [],
            cluster=hello.cluster if hello else None,
        )

    # ------------------------------------------------------------------ the loop (a process of its own)

    def _ledger_dir(self) -> Path:
        return self.root / ".nightlab" / self.settings().tag

    def _link(self) -> LoopLink | None:
        """The link to this folder's loop process (made once the folder's settings read)."""
        if self.link is None and self.is_workspace():
            self.link = LoopLink(self._ledger_dir(), self.settings().tag, self._on_event)
        return self.link

    def _on_event(self, event: dict[str, Any]) -> None:
        """The loop's events on their way to `emit`: the cluster's view kept for the state."""
        if event.get("type") == ev.CLUSTER and self.link is not None and self.link.snapshot is not None:
            self.link.snapshot.cluster = ClusterPayload.from_wire(event.get("cluster") or {})
        self.emit(event)

    async def attach(self) -> bool:
        """Follow the folder's loop when one runs (started from a terminal or an earlier window), and look
        for one started later; whether one runs now."""
        link = self._link()
        if link is None:
            return False
        up = await link.attach()
        link.watch()
        return up

    def running(self) -> bool:
        """Whether a loop process runs for this folder (and this session follows it)."""
        return self.link is not None and self.link.attached

    async def start(self, overrides: dict[str, Any] | None = None) -> LoopCommandResult:
        """Start the folder's loop as a process of its own (`nightlab run --detach`) and attach to it;
        `overrides` are settings.OVERRIDES names (the CLI's flags) over nightlab.toml."""
        if self.running() or self._starting:
            raise SessionError("the loop is already running in this workspace; stop it first")
        settings = self._checked(overrides or {})
        try:
            args = run_args(self.root, overrides or {})
        except ValueError as exc:
            raise SessionError(str(exc), SessionError.INVALID) from None
        self._starting = True
        try:
            first = settings.lineages[0].name if settings.lineages else settings.tag  # a swarm's process: there
            up = await asyncio.to_thread(launch, self.root / ".nightlab" / first, args, cwd=self.root)
        except LaunchFailed as exc:
            raise SessionError(str(exc)) from None
        finally:
            self._starting = False
        shown = self._shown(settings)
        if shown is not None:  # a swarm: the settings of the lineage this session follows
            self._base, settings = settings, lineage_settings(settings, shown)
        if self.link is not None and self.link.tag != settings.tag:
            await self.link.close()
            self.link = None
        self._settings, self.tag = settings, settings.tag
        if up.ended:
            return LoopCommandResult(state="stopped", message="the loop ended already: " + " / ".join(up.tail[-3:]))
        await self.attach()
        state = self.link.state if self.link else "idle"
        return LoopCommandResult(state=state, message=f"the loop runs: pid {up.pid}", tag=settings.tag)

    def _checked(self, overrides: dict[str, Any]) -> Settings:
        """The settings the loop would run with, checked here (a bad argument is the request's fault)."""
        try:
            settings = load_settings(self.root, overrides)
            for tag in [lin.name for lin in settings.lineages] or [settings.tag]:
                if owner := loop_owner(self.root / ".nightlab" / tag):
                    raise EngineBusy(f"another nightlab loop (pid {owner}) is running on tag {tag}; stop it first")
            from nightlab.server.loop.engine import Engine  # (the engine's imports only when Start is asked)

            Engine(settings)  # an unknown agent or policy, bad options, a missing key: said before it starts
            return settings
        except SettingsError as exc:  # from an override: the argument's fault; from the file: the workspace's
            raise SessionError(str(exc), SessionError.INVALID if exc.option else SessionError.CONFLICT) from None
        except (AgentError, PolicyError) as exc:
            named = overrides.get("agent" if isinstance(exc, AgentError) else "policy")
            raise SessionError(str(exc), SessionError.INVALID if named else SessionError.CONFLICT) from None
        except (StoreError, EngineBusy) as exc:
            raise SessionError(str(exc)) from None
        except Exception as exc:  # unexpected: say it plainly, keep the traceback for the log
            log.exception("starting the loop failed")
            raise SessionError(f"the loop could not start: {exc}") from None

    async def _command(self, name: str, number: int | None = None) -> c.ControlReply:
        link = self._link()
        if link is None or not link.attached:
            raise SessionError("the loop is not running in this workspace; start it first")
        try:
            return await link.command(name, number)
        except LinkError as exc:
            raise SessionError(str(exc), exc.kind) from None

    def _result(self, message: str, state: str | None = None) -> LoopCommandResult:
        tag = self.settings().tag if self.is_workspace() else ""
        return LoopCommandResult(state=state or (self.link.state if self.link else "idle"), message=message, tag=tag)

    async def pause(self) -> LoopCommandResult:
        """Pause after the running experiments; a loop that is not running stays as it is (no error)."""
        if not self.running():
            return self._result("the loop is not running; nothing to pause")
        reply = await self._command("pause")
        return self._result(reply.message, str(reply.state))

    async def resume(self) -> LoopCommandResult:
        reply = await self._command("resume")
        return self._result(reply.message, str(reply.state))

    async def stop(self) -> LoopCommandResult:
        """Stop the loop and wait for its process to end; a loop that is not running stays as it is."""
        if not self.running() or self.link is None:
            return self._result("the loop is not running; nothing to stop")
        pid = self.link.snapshot.pid if self.link.snapshot else None
        try:
            await self._command("stop")
        except SessionError:
            if self.running():  # not a loop that ended as the stop went out: a real refusal
                raise
        await self.link.ended(60)
        if pid is not None:
            await wait_gone(pid, 15)  # its last records written, its trainings gone
        return self._result("stopped; an interrupted run goes again on the next start", "stopped")

    async def detach(self) -> None:
        """Let go of the loop (closing the editor): it goes on running."""
        if self.link is not None:
            await self.link.close()
            self.link = None

    async def cancel_run(self, number: int) -> bool:
        """Stop one running experiment (it is recorded as interrupted); the loop goes on."""
        try:
            await self._command("cancel", number)
            return True
        except SessionError:
            return False

    def progress(self, number: int) -> Progress | None:
        """The latest progress sample of a running experiment; None when it is not running (or has
        not reported yet)."""
        p = self.link.progress.get(number) if self.link is not None and self.link.attached else None
        return progress_from(p) if p else None

    # ------------------------------------------------------------------ review

    def review(self, number: int, verdict: str, note: str = "") -> Experiment:
        """Record the person's verdict (accepted / rejected) on an experiment: a new ledger record,
        the old ones stay (the ledger is append-only)."""
        exp = self.experiment(number)
        exp.review, exp.review_note, exp.reviewed_at = Review(verdict), note or exp.review_note, utc_now()
        self.ledger().append(exp)
        return exp

    async def rerun(self, number: int) -> ExperimentCommandResult:
        """Run an experiment's change again (a new number, another look at a noisy result)."""
        if not self.running():
            raise SessionError("the loop is not running in this workspace; start it first")
        self.experiment(number)
        reply = await self._command("rerun", number)
        return ExperimentCommandResult(number=number, message=reply.message)

    async def measure_baseline(self) -> LoopCommandResult:
        """Measure the current best again, `repeats` times: a fresh anchor for the noise floor."""
        reply = await self._command("baseline")
        return self._result(reply.message, str(reply.state))
