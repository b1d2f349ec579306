"""The engine: autoresearch's loop as an asyncio state machine that emits events.

propose -> apply edits -> commit (before the run, so a kill -9 loses nothing) -> compile check ->
run -> decide -> amend the commit message with the verdict -> keep (branch stays) or discard/crash
(ref kept, branch back to the last kept commit) -> ledger -> repeat.

The engine is the only part that knows the store, runner, ledger, agent and policy; each comes in
through the constructor (built from the settings by default), so tests and the language server can
swap any of them. Clients subscribe to events (nightlab.protocol.events) and call pause/resume/stop.

Must not import: pygls, lsprotocol, rich, typer.
"""
from __future__ import annotations

import asyncio
import difflib
import logging
import os
import re
import shlex
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from nightlab.protocol import events as ev

from .agents.base import AgentError, make_agent
from .edits import EditError, apply_edits, diff_summary
from .ledger import Ledger
from .policy import make_policy
from .runner import Runner, compile_check, kill_orphan
from .settings import Settings
from .store import Store
from .types import Experiment, ExperimentContext, HistoryItem, Progress, Proposal, RunResult

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def resolve_command(command: str) -> str:
    """`python ...` means the interpreter Nightlab runs in (the one with torch), not whatever `python`
    is first on PATH: that is what a user who installed Nightlab in a virtualenv expects."""
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return shlex.join(argv)


def crash_summary(error: str) -> str:
    """One line for a crash: the runner's reason plus the exception line of a traceback, if any."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    if not lines:
        return "crashed"
    exc = next((line for line in reversed(lines)
                if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", line)), "")
    head = lines[0]
    return (f"{head}: {exc}" if exc and exc != head else head)[:300]


class EngineBusy(Exception):
    """Another loop holds this tag's lock."""


LOCK_NAME = "loop.lock"


def _lock(folder: Path):
    """An exclusive lock on the tag's ledger folder for the life of the process (the kernel drops it
    when the process dies, kill -9 included). Returns the open file, or raises EngineBusy."""
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK_NAME, "a+")
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no lock
        return f
    except OSError:
        f.close()
        raise EngineBusy(f"another nightlab loop (pid {loop_owner(folder) or '?'}) is running on {folder}; "
                         "stop it first or use another --tag") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def loop_owner(folder: Path) -> int | None:
    """The pid of the loop running on this ledger folder, or None."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return None
    try:
        import fcntl

        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(f, fcntl.LOCK_UN)
            return None
    except ImportError:
        return None


def _unified(old: dict[str, str], new: dict[str, str]) -> str:
    out = []
    for path in sorted(new):
        out.extend(difflib.unified_diff(old.get(path, "").splitlines(True), new[path].splitlines(True),
                                        f"a/{path}", f"b/{path}"))
    return "".join(out)


class Engine:
    def __init__(self, settings: Settings, *, store: Store | None = None, ledger: Ledger | None = None,
                 runner: Runner | None = None, agent=None, policy=None):
        self.settings = settings
        root = Path(settings.workspace)
        tag = settings.tag
        self.store = store or Store(root, tag)
        self.ledger = ledger or Ledger(root / ".nightlab" / tag, metric_name=settings.metric.name)
        self.runs_dir = root / ".nightlab" / "runs" / tag
        self.runner = runner or Runner()
        self.agent = agent or make_agent(settings.agent.name, settings.agent.options, settings.run.seed)
        self.policy = policy or make_policy(settings.policy.name)
        self.state = "idle"
        self.listeners: list[Listener] = []
        self._stop = asyncio.Event()
        self._resume = asyncio.Event()
        self._resume.set()
        self._cancel_run: asyncio.Event | None = None
        self._pending: list[Proposal] = []  # re-runs of interrupted experiments come first
        self.running: Experiment | None = None
        self.started_here = 0

    # ------------------------------------------------------------------ events and control

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def emit(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, **fields}
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # a broken view must not stop the loop
                log.exception("event listener failed")

    def _set_state(self, state: str, reason: str = "") -> None:
        self.state = state
        self.emit(ev.STATE, state=state, reason=reason)

    def message(self, text: str, level: str = "info") -> None:
        self.emit(ev.MESSAGE, level=level, text=text)

    def pause(self) -> None:
        """Finish the running experiment, then wait before the next one."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def stop(self) -> None:
        """End the running experiment now (recorded as interrupted, re-run on the next start), then stop."""
        self._stop.set()
        self._resume.set()
        if self._cancel_run is not None:
            self._cancel_run.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        started = time.monotonic()
        self._lockfile = _lock(self.ledger.dir)
        try:
            self.store.open_or_create()
            self._check_committed()
            self._recover()
            limit = self.settings.run.max_experiments
            hours = self.settings.run.max_hours
            while not self._stop.is_set():
                if limit and self.started_here >= limit:
                    self.message(f"reached max_experiments = {limit}")
                    break
                if hours and time.monotonic() - started > hours * 3600:
                    self.message(f"reached max_hours = {hours}")
                    break
                if not self._resume.is_set():
                    self._set_state("paused")
                    await self._resume.wait()
                    continue
                proposal = await self._next_proposal()
                if proposal is None:
                    break
                await self.run_experiment(proposal)
        except AgentError as exc:
            self._set_state("errored", str(exc))
            return
        except Exception as exc:
            log.exception("engine failed")
            self._set_state("errored", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._lockfile.close()
        self._set_state("stopped", "stop requested" if self._stop.is_set() else "limit reached")

    def _check_committed(self) -> None:
        """The loop starts from the user's HEAD: files that exist only in the working tree are not there."""
        missing = [p for p in (*self.settings.files.editable, *self.settings.files.protected)
                   if not (self.store.workdir / p).is_file()]
        if missing:
            raise AgentError(f"{', '.join(missing)} not committed: the loop starts from your last commit "
                             f"(branch {self.store.branch} is made from it); commit the workspace files, "
                             f"then run again")

    def _recover(self) -> None:
        """Resume after a stop or a kill -9: every experiment left running is recorded as interrupted
        and queued to run again (under a new number); the branch goes back to the last kept commit."""
        self.ledger.repair()
        rerun_done = {e.meta.get("rerun_of") for e in self.ledger.experiments()}
        for exp in self.ledger.unfinished():
            if kill_orphan(self.runs_dir / str(exp.number), self.store.worktree):
                self.message(f"killed the training of experiment {exp.number} left running by a dead loop")
            final = replace(exp, status="interrupted", run_status="interrupted", finished_at=_now(),
                            decision_reason="the engine stopped during this run; it is run again")
            sha = self.store.ref_for(exp.number)  # the amended commit, when the verdict was half written
            if sha:
                final.commit = sha
            self.ledger.finalize(final)
            if sha and self.store.head() == sha and exp.parent_commit:
                self.store.discard(exp.number, sha, exp.parent_commit)
            self.emit(ev.EXPERIMENT_FINISHED, experiment=final.to_json())
        self.store.reset_worktree()
        for exp in self.ledger.experiments():
            if exp.status == "interrupted" and exp.number not in rerun_done and exp.commit:
                files = {p: self.store.read_file(p, exp.commit) for p in self.settings.files.editable}
                self._pending.append(Proposal(
                    description=exp.description, hypothesis=exp.hypothesis, agent=exp.agent,
                    edits=[], meta={**exp.meta, "rerun_of": exp.number, "files": files}))
                self.message(f"experiment {exp.number} was interrupted; running it again")

    def context(self) -> ExperimentContext:
        files = {p: self.store.read_file(p) for p in self.settings.files.editable}
        program_path = self.store.workdir / self.settings.files.program
        program = program_path.read_text(encoding="utf-8") if program_path.exists() else ""
        history = [HistoryItem(number=e.number, description=e.description,
                               status="baseline" if e.meta.get("baseline") else e.status, metric=e.metric,
                               delta=e.delta, diff_summary=diff_summary(e.diff) if e.diff else "", meta=e.meta)
                   for e in self.ledger.experiments()]
        best = self.ledger.best(self.settings.metric.direction)
        return ExperimentContext(program=program, files=files, editable=list(self.settings.files.editable),
                                 history=history, metric_name=self.settings.metric.name,
                                 direction=self.settings.metric.direction, best=best.metric if best else None,
                                 seed=self.settings.run.seed + self.ledger.next_number())

    async def _next_proposal(self) -> Proposal | None:
        if self._pending:
            return self._pending.pop(0)
        if self.ledger.best(self.settings.metric.direction) is None:
            crashed = [e for e in self.ledger.experiments() if e.meta.get("baseline") and e.status == "crash"]
            if crashed:
                e = crashed[-1]
                raise AgentError(f"the baseline (experiment {e.number}, your unchanged code) crashed: "
                                 f"{e.decision_reason}; fix it, then run again "
                                 f"(log: {self.runs_dir / str(e.number) / 'run.log'})")
            return Proposal(description="baseline", edits=[], hypothesis="the unchanged code, for reference",
                            agent="", meta={"baseline": True})
        self._set_state("proposing")
        return await self.agent.propose(self.context())

    # ------------------------------------------------------------------ one experiment

    async def run_experiment(self, proposal: Proposal) -> Experiment:
        s = self.settings
        number = self.ledger.next_number()
        self.started_here += 1
        self.store.reset_worktree()  # every experiment starts from the clean head: no leftovers of the last run
        parent = self.store.head()
        old = {p: self.store.read_file(p) for p in s.files.editable}
        exp = Experiment(number=number, tag=s.tag, description=proposal.description,
                         hypothesis=proposal.hypothesis, parent_commit=parent, agent=proposal.agent,
                         usage=proposal.usage, seeds=[s.run.seed], started_at=_now(),
                         meta=dict(proposal.meta))
        files = exp.meta.pop("files", None)
        error = ""
        if files is None:
            try:
                changed = apply_edits(old, proposal.edits, list(s.files.editable), list(s.files.protected))
                files = {**old, **changed}
            except EditError as exc:
                error = f"edit rejected: {exc}"
                files = old
        exp.diff = _unified(old, files)
        sha = self.store.commit_experiment(files, self._message(exp, "running"), number=number)
        exp.commit = sha
        self.ledger.append(exp)
        self.running = exp
        self.emit(ev.EXPERIMENT_STARTED, experiment=exp.to_json())
        if not error:
            error = compile_check(self.store.workdir, [p for p in files if p.endswith(".py")]) or ""
            if error:
                error = f"does not compile (no training spent): {error}"
        if error:
            result = RunResult(status="crash", error=error)
        else:
            result = await self._train(exp)
        return self._decide(exp, result)

    async def _train(self, exp: Experiment) -> RunResult:
        s = self.settings
        self._set_state("running", exp.description)
        run_dir = self.runs_dir / str(exp.number)
        self._cancel_run = asyncio.Event()
        if self._stop.is_set():
            self._cancel_run.set()

        def on_progress(p: Progress) -> None:
            self.emit(ev.PROGRESS, number=exp.number, progress=asdict(p))

        try:
            result = await self.runner.run(
                self.store.workdir, resolve_command(s.run.command), log_path=run_dir / "run.log",
                events_path=run_dir / "events.jsonl",
                budget_seconds=s.budget.seconds if s.budget.mode == "time" else None,
                budget_tokens=s.budget.tokens if s.budget.mode == "tokens" else None,
                seed=s.run.seed, deadline_s=s.deadline_seconds, on_progress=on_progress, cancel=self._cancel_run)
        finally:
            self._cancel_run = None
        changed = self.store.changed_since(s.files.protected, exp.commit)
        if changed and result.status == "ok":
            result = replace(result, status="crash",
                             error=f"invalid: protected file(s) changed during the run: {', '.join(changed)}")
        return result

    def _decide(self, exp: Experiment, result: RunResult) -> Experiment:
        s = self.settings
        self._set_state("deciding", exp.description)
        metric = result.metric(s.metric.name)
        best = self.ledger.best(s.metric.direction)
        best_value = best.metric if best else None
        exp.run_status = result.status
        exp.metric = metric
        exp.metrics = dict(result.metrics)
        exp.best_before = best_value
        exp.delta = (metric - best_value) if (metric is not None and best_value is not None) else None
        exp.timings = {"startup_s": result.startup_s, "training_s": result.training_s, "eval_s": result.eval_s,
                       "total_s": result.total_s}
        exp.memory_gb = round(result.peak_memory_mb / 1024, 1)
        exp.error = result.error
        exp.finished_at = _now()
        if result.status == "interrupted":
            exp.status, exp.decision_reason = "interrupted", "stopped during the run; it runs again on the next start"
        else:
            exp.status, exp.decision_reason = self.policy.decide(metric, best_value, s.metric.direction,
                                                                 result.status)
            if result.status == "timeout":
                exp.decision_reason = f"killed at the deadline ({s.deadline_seconds:.0f} s)"
            elif result.status == "crash" and result.error:
                exp.decision_reason = crash_summary(result.error)
        exp.commit = self.store.amend_message(self._message(exp, exp.status), number=exp.number)
        if exp.status == "keep":
            self.store.keep(exp.commit, exp.number)
        else:
            self.store.discard(exp.number, exp.commit, exp.parent_commit)
        exp.diff = self.store.diff(exp.parent_commit, exp.commit) or exp.diff
        self.ledger.finalize(exp)
        self.running = None
        self.emit(ev.EXPERIMENT_FINISHED, experiment=exp.to_json())
        return exp

    def _message(self, exp: Experiment, verdict: str) -> str:
        name = self.settings.metric.name
        lines = [f"nightlab #{exp.number}: {exp.description}", ""]
        if exp.hypothesis:
            lines += [exp.hypothesis, ""]
        metric = f"{exp.metric:.6f}" if exp.metric is not None else "none"
        delta = f"{exp.delta:+.6f}" if exp.delta is not None else "n/a"
        lines += [f"experiment: {exp.number}", f"{name}: {metric}", f"delta: {delta}", f"verdict: {verdict}"]
        if exp.decision_reason:
            lines.append(f"reason: {exp.decision_reason}")
        return "\n".join(lines) + "\n"
