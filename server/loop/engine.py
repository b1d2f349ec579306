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
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

from nightlab.protocol import events as ev

from nightlab.server.agents.base import AgentError, ProposalError, make_agent
from nightlab.server.changes.edits import EditError, apply_edits, diff_summary
from nightlab.server.loop.plan import Trial, crash_summary, now, run_values  # noqa: F401  (crash_summary: re-exported)
from nightlab.server.record.ledger import Ledger
from nightlab.server.core.policy import make_policy
from nightlab.server.core.stats import estimate_sigma
from nightlab.server.run.runner import Runner, kill_orphan
from nightlab.server.core.settings import Settings
from nightlab.server.record.lock import EngineBusy, acquire, loop_owner  # noqa: F401  (re-exported for the CLI)
from nightlab.server.run.slots import SlotSpec, resolve_slots  # noqa: F401
from nightlab.server.record.store import Slot, Store
from nightlab.server.core.types import Experiment, ExperimentContext, FileEdit, HistoryItem, Proposal

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]


def resolve_command(command: str) -> str:
    """`python ...` means the interpreter Nightlab runs in (the one with torch), not whatever `python`
    is first on PATH: that is what a user who installed Nightlab in a virtualenv expects."""
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return shlex.join(argv)


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
        self.policy = policy or make_policy(settings.policy.name, settings.policy.options)
        self.state = "idle"
        self.listeners: list[Listener] = []
        self._stop = asyncio.Event()
        self._resume = asyncio.Event()
        self._resume.set()
        self.trials: dict[int, Trial] = {}  # the experiments running now, by number
        self.slots = resolve_slots(settings.run.slots)
        self._baseline_running = False
        self._best_ready = asyncio.Event()
        # Proposals made but not finished (drafts included): no slot is given the same idea twice.
        self._reserved: list[str] = []
        self._agent_lock = asyncio.Lock()
        self.policy_repeats = max(1, int(getattr(self.policy, "baseline_repeats", 1)))
        self.command = resolve_command(settings.run.command)
        if hasattr(self.agent, "on_status"):  # an LLM agent says why it waits (rate limits, outages)
            self.agent.on_status = lambda text: self.message(text, "warning")
        self._pending: list[Proposal] = []  # re-runs of interrupted experiments come first
        self.started_here = 0  # experiments started (or reserved by a slot about to start one) by this run

    @property
    def trial(self) -> Trial | None:
        """The running experiment (the newest one when several slots run)."""
        return self.trials[max(self.trials)] if self.trials else None

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

    def set_state(self, state: str, reason: str = "") -> None:
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
        self._best_ready.set()  # a slot waiting for the baseline must wake up to see the stop
        for trial in self.trials.values():
            trial.cancel.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        started = time.monotonic()
        self._lockfile = acquire(self.ledger.dir)
        try:
            self.store.open_or_create()
            self._check_committed()
            self._recover()
            if len(self.slots) > 1:
                self.message(f"{len(self.slots)} slots: " + ", ".join(s.name for s in self.slots))
            tasks = [asyncio.create_task(self._worker(i, spec, started)) for i, spec in enumerate(self.slots)]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = [t for t in done if t.exception() is not None]
            if failed:  # one slot hit a problem a person must fix: end the others cleanly, then report it
                self.stop()
                if pending:
                    await asyncio.wait(pending)
                raise failed[0].exception()
        except AgentError as exc:
            self.set_state("errored", str(exc))
            return
        except Exception as exc:
            log.exception("engine failed")
            self.set_state("errored", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._lockfile.close()
        self.set_state("stopped", "stop requested" if self._stop.is_set() else "limit reached")

    async def _worker(self, index: int, spec: SlotSpec, started: float) -> None:
        """One slot's loop: get a proposal (drafted ahead while the last run trained), run it, repeat."""
        slot = self.store.slot(index)
        draft: asyncio.Task | None = None
        try:
            while not self._stop.is_set():
                if not self._resume.is_set():
                    self.set_state("paused")
                    await self._resume.wait()
                    continue
                if self._limit_reached(started):
                    break
                self.started_here += 1  # reserved now: the other slots see it while this one awaits
                if draft is not None:
                    proposal, draft = await self._take_draft(draft), None
                else:
                    proposal = await self._next_proposal()
                if proposal is None or self._stop.is_set():
                    self.started_here -= 1
                    break
                trial, error = await self.prepare(proposal, slot, spec)
                # Propose-ahead: the agent drafts the next experiment while this one trains, so the
                # GPU does not wait for the LLM. The draft is re-based (or re-asked) if this one is kept.
                if self.settings.run.propose_ahead and not error and not self._limit_reached(started, quiet=True):
                    draft = asyncio.create_task(self._draft(trial.exp))
                self.trials[trial.exp.number] = trial
                try:
                    await trial.execute(error)
                finally:
                    self.trials.pop(trial.exp.number, None)
        finally:
            if draft is not None:
                draft.cancel()

    def _limit_reached(self, started: float, quiet: bool = False) -> bool:
        s = self.settings.run
        why = ""
        if s.max_experiments and self.started_here >= s.max_experiments:
            why = f"reached max_experiments = {s.max_experiments}"
        elif s.max_hours and time.monotonic() - started > s.max_hours * 3600:
            why = f"reached max_hours = {s.max_hours}"
        elif s.max_cost_usd and self.cost_usd() >= s.max_cost_usd:
            why = f"reached max_cost_usd = {s.max_cost_usd:.2f} (spent {self.cost_usd():.2f})"
        if why and not quiet and why != getattr(self, "_said", ""):
            self._said = why
            self.message(why)
        return bool(why)

    def cost_usd(self) -> float:
        """What the agent has cost on this tag, over every experiment in the ledger."""
        return sum(float(e.usage.get("cost_usd") or 0.0) for e in self.ledger.experiments())

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
            if kill_orphan(self.runs_dir / str(exp.number), self.store.root / ".nightlab"):
                self.message(f"killed the training of experiment {exp.number} left running by a dead loop")
            final = replace(exp, status="interrupted", run_status="interrupted", finished_at=now(),
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

    def context(self, in_flight: list[str] | None = None) -> ExperimentContext:
        files = {p: self.store.read_file(p) for p in self.settings.files.editable}
        program_path = self.store.workdir / self.settings.files.program
        program = program_path.read_text(encoding="utf-8") if program_path.exists() else ""
        history = [HistoryItem(number=e.number, description=e.description,
                               status="baseline" if e.meta.get("baseline") else e.status, metric=e.metric,
                               delta=e.delta, diff_summary=diff_summary(e.diff) if e.diff else "", meta=e.meta,
                               reason=e.decision_reason)
                   for e in self.ledger.experiments() if e.status != "running"]  # in_flight says those
        best = self.ledger.best(self.settings.metric.direction)
        if in_flight is None:
            in_flight = self._in_flight()
        return ExperimentContext(program=program, files=files, editable=list(self.settings.files.editable),
                                 history=history, metric_name=self.settings.metric.name,
                                 direction=self.settings.metric.direction, best=best.metric if best else None,
                                 seed=self.settings.run.seed + self.ledger.next_number(),
                                 noise_sigma=self.sigma(), in_flight=list(in_flight or []))

    async def _next_proposal(self) -> Proposal | None:
        if self._pending:
            return self._pending.pop(0)
        while self._baseline_running and self.ledger.best(self.settings.metric.direction) is None:
            await self._best_ready.wait()  # another slot runs the baseline: nothing to propose against yet
        if self.ledger.best(self.settings.metric.direction) is None:
            crashed = [e for e in self.ledger.experiments() if e.meta.get("baseline") and e.status == "crash"]
            if crashed:
                e = crashed[-1]
                raise AgentError(f"the baseline (experiment {e.number}, your unchanged code) crashed: "
                                 f"{e.decision_reason}; fix it, then run again "
                                 f"(log: {self.runs_dir / str(e.number) / 'run.log'})")
            self._baseline_running = True
            self._best_ready.clear()
            return Proposal(description="baseline", edits=[], hypothesis="the unchanged code, for reference",
                            agent="", meta={"baseline": True})
        self.set_state("proposing")
        return await self._ask(self.context)

    async def _ask(self, make_context: Callable[[], ExperimentContext]) -> Proposal:
        """The agent's proposal; one it could not make valid becomes a crash record, not a stop. One
        agent call at a time, its context built once the call may start (so it sees the latest best,
        history and every idea in flight): parallel slots get distinct ideas."""
        async with self._agent_lock:
            ctx = make_context()
            ctx = replace(ctx, in_flight=self._in_flight())
            try:
                proposal = await self.agent.propose(ctx)
            except ProposalError as exc:
                return Proposal(description="invalid proposal", edits=[], agent=self.agent.name,
                                usage=dict(getattr(exc, "usage", {}) or {}), meta={"invalid": str(exc)})
            proposal.meta.setdefault("base", self.store.head())
            self._reserved.append(proposal.description)
            return proposal

    def _in_flight(self) -> list[str]:
        out = [t.exp.description for t in self.trials.values()] + self._reserved
        return list(dict.fromkeys(out))

    def _release(self, description: str) -> None:
        if description in self._reserved:
            self._reserved.remove(description)

    async def _draft(self, running: Experiment) -> Proposal | None:
        """The next proposal, drafted against the current best while `running` trains."""
        if self._pending or self.ledger.best(self.settings.metric.direction) is None:
            return None  # a re-run or the baseline comes next: nothing to ask the agent
        return await self._ask(self.context)

    async def _take_draft(self, draft: asyncio.Task) -> Proposal | None:
        proposal = await draft
        if proposal is None:
            return await self._next_proposal()
        head = self.store.head()
        if proposal.meta.get("base") in (None, head) or not proposal.edits:
            return proposal
        # The experiment that ran meanwhile was kept: the draft was written against its parent.
        try:
            files = {p: self.store.read_file(p) for p in self.settings.files.editable}
            apply_edits(files, proposal.edits, list(self.settings.files.editable), list(self.settings.files.protected))
        except EditError as exc:
            self._release(proposal.description)
            self.message(f"the drafted proposal no longer applies after the last keep ({exc.reason}); asking again")
            return await self._next_proposal()
        proposal.meta.update(base=head, rebased=True)
        return proposal

    # ------------------------------------------------------------------ one experiment

    async def prepare(self, proposal: Proposal, slot: Slot, spec: SlotSpec) -> tuple[Trial, str]:
        """Apply the proposal's edits (once more with feedback to an LLM agent when they do not apply),
        commit it in the slot's worktree, and record the experiment as running. Returns its Trial and
        the reason it cannot run, if any."""
        s = self.settings
        editable, protected = list(s.files.editable), list(s.files.protected)
        files = proposal.meta.pop("files", None)
        error = proposal.meta.get("invalid", "") and f"the agent's proposal was invalid: {proposal.meta['invalid']}"
        parent = self.store.head()
        old = {p: self.store.read_file(p, parent) for p in editable}
        if files is None and not error:
            try:
                files = {**old, **apply_edits(old, proposal.edits, editable, protected)}
            except EditError as exc:
                files, error = old, f"edit rejected: {exc}"
                if getattr(self.agent, "accepts_feedback", False) and not proposal.meta.get("baseline"):
                    self._release(proposal.description)
                    feedback = _feedback(exc, proposal)
                    retry = await self._ask(lambda: replace(self.context(), feedback=feedback))
                    proposal = replace(retry, usage=_add_usage(proposal.usage, retry.usage))
                    parent = self.store.head()  # the branch may have moved while the agent thought
                    old = {p: self.store.read_file(p, parent) for p in editable}
                    if retry.meta.get("invalid"):
                        files, error = old, f"the agent's proposal was invalid: {retry.meta['invalid']}"
                    else:
                        try:
                            files, error = {**old, **apply_edits(old, retry.edits, editable, protected)}, ""
                        except EditError as again:
                            files, error = old, f"edit rejected twice: {again}"
        # From here on nothing awaits: the number, the commit and the ledger record are one step, so
        # slots running side by side never take the same number.
        files = files or old
        number = self.ledger.next_number()
        meta = dict(proposal.meta)
        meta["edits"] = [asdict(e) for e in proposal.edits]
        meta["slot"] = spec.name
        exp = Experiment(number=number, tag=s.tag, description=proposal.description,
                         hypothesis=proposal.hypothesis, parent_commit=parent, agent=proposal.agent,
                         usage=proposal.usage, seeds=[s.run.seed], started_at=now(), meta=meta,
                         diff=_unified(old, files))
        slot.checkout(parent)
        exp.commit = slot.commit(files, self._message(exp, "running"), number)
        self.ledger.append(exp)
        self.emit(ev.EXPERIMENT_STARTED, experiment=exp.to_json())
        return Trial(self, exp, slot, spec), error

    def best_values(self) -> list[float] | None:
        best = self.ledger.best(self.settings.metric.direction)
        return run_values(best) if best else None

    def sigma(self) -> float | None:
        """The run-to-run noise, pooled over every experiment that was run more than once."""
        groups = [run_values(e) for e in self.ledger.experiments() if e.status in ("keep", "discard")]
        return estimate_sigma([g for g in groups if len(g) > 1])

    def record(self, exp: Experiment, slot: Slot) -> Experiment:
        """Amend the experiment's commit with its verdict, move the branch forward if it is kept, write
        the final record. A keep whose base is no longer the best (another slot kept something while it
        ran) does not move the branch: it is queued again on top of the new best."""
        if exp.status == "keep" and not exp.meta.get("baseline") and self.store.head() != exp.parent_commit:
            exp.status = "discard"
            exp.decision_reason += "; but the best moved on while it ran: queued again on top of it"
            self._requeue(exp)
        exp.commit = slot.amend(self._message(exp, exp.status), exp.number)
        if exp.status == "keep" and not self.store.advance(exp.commit, exp.parent_commit):
            raise RuntimeError(f"branch {self.store.branch} moved during the decision of #{exp.number}")
        exp.diff = self.store.diff(exp.parent_commit, exp.commit) or exp.diff
        self.ledger.finalize(exp)
        self._release(exp.description)
        if exp.meta.get("baseline"):
            self._baseline_running = False
        if exp.status == "keep" or exp.meta.get("baseline"):
            self._best_ready.set()
        self.emit(ev.EXPERIMENT_FINISHED, experiment=exp.to_json())
        return exp

    def _requeue(self, exp: Experiment) -> None:
        edits = [FileEdit(**e) for e in exp.meta.get("edits", [])]
        head = {p: self.store.read_file(p) for p in self.settings.files.editable}
        try:
            apply_edits(head, edits, list(self.settings.files.editable), list(self.settings.files.protected))
        except EditError as exc:
            exp.decision_reason = exp.decision_reason.replace("queued again on top of it",
                                                              f"it no longer applies there ({exc.reason})")
            return
        meta = {k: v for k, v in exp.meta.items() if k not in ("runs", "decision", "smoke", "edits", "slot")}
        self._pending.append(Proposal(description=exp.description, edits=edits, hypothesis=exp.hypothesis,
                                      agent=exp.agent, meta={**meta, "rerun_of": exp.number}))

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


def _feedback(exc: EditError, proposal: Proposal) -> str:
    """What to tell an LLM whose edit did not apply: the reason and the SEARCH text that failed."""
    text = str(exc)
    index = getattr(exc, "index", None)
    if isinstance(index, int) and 1 <= index <= len(proposal.edits):
        text += f"\nThe SEARCH text that failed was:\n{proposal.edits[index - 1].search}"
    return text + "\nCopy SEARCH text exactly from the current file shown above."


def _add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(out.get(key, 0), (int, float)):
            out[key] = out.get(key, 0) + value
        else:
            out.setdefault(key, value)
    return out
