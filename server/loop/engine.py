"""The engine: autoresearch's loop as an asyncio state machine that emits events.

propose -> apply edits -> commit (before the run, so a kill -9 loses nothing) -> the run plan
(compile check, smoke, full run, repeats, confirmations: plan.py) -> verdict (verdict.py, with the
policy) -> amend the commit with it -> keep (the branch fast-forwards) or discard/crash (the ref stays)
-> ledger -> repeat. One worker per slot; agent calls are serialised and told every idea in flight.

The engine is the only part that knows the store, the launcher, the ledger, the agent and the policy;
each comes in through the constructor (built from the settings by default). Clients subscribe to
events (nightlab.protocol.events) and use the public methods below; no client touches a private one.
Must not import: pygls, lsprotocol, rich, typer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from nightlab.protocol import events as ev
from nightlab.server.agents.base import AgentError, make_agent
from nightlab.server.core.policy import make_policy
from nightlab.server.core.settings import Settings
from nightlab.server.core.types import (
    Experiment,
    ExperimentKind,
    ExperimentStatus,
    LoopState,
    Progress,
    Proposal,
    utc_now,
)
from nightlab.server.loop import conditions, elastic, lineage, pairing, ports
from nightlab.server.loop import proposals as pr
from nightlab.server.loop.launch import rerun_lost, settings_launcher
from nightlab.server.loop.plan import RunPlan, execute
from nightlab.server.loop.proposer import Proposer, Stopped
from nightlab.server.loop.recovery import recover, rerun
from nightlab.server.loop.space import DiskGuard
from nightlab.server.loop.startfiles import start_problem
from nightlab.server.loop.verdict import commit_message, judge
from nightlab.server.record.ledger import Ledger, LedgerError
from nightlab.server.record.lock import acquire
from nightlab.server.record.store import Slot, Store
from nightlab.server.run.launcher import Launcher
from nightlab.server.run.sandbox import SandboxUnavailable
from nightlab.server.run.slots import SlotSpec

log = logging.getLogger(__name__)
Listener = Callable[[dict[str, Any]], None]


class Running:
    """One experiment in flight: its record, its slot, its cancel token and its latest progress."""

    def __init__(self, exp: Experiment, slot: Slot, spec: SlotSpec):
        self.exp, self.slot, self.spec = exp, slot, spec
        self.cancel = asyncio.Event()
        self.progress: Progress | None = None


class Engine:
    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        ledger: Ledger | None = None,
        launcher: Launcher | None = None,
        agent=None,
        policy=None,
    ):
        self.settings = settings
        root = Path(settings.workspace)
        self.store = store or Store(root, settings.tag, branch=settings.branch)
        self.ledger = ledger or Ledger(root / ".nightlab" / settings.tag, metric_name=settings.metric.name)
        self.runs_dir = root / ".nightlab" / "runs" / settings.tag
        self.launcher: Launcher | None = launcher  # None: the settings' (sandboxed) launcher, made on start
        self.agent = agent or make_agent(settings.agent.name, settings.agent.options, settings.run.seed)
        self.policy = policy or make_policy(settings.policy.name, settings.policy.options)
        self.state = LoopState.IDLE
        self.listeners: list[Listener] = []
        self.slots = elastic.slots(settings)  # with Ray and "auto": as many as the cluster holds (elastic.py)
        self.command = pr.resolve_command(settings.run.command)
        self.policy_repeats = max(1, int(getattr(self.policy, "baseline_repeats", 1)))
        self.started_here = 0  # experiments started (or reserved by a slot about to start one) by this run
        self._stop = asyncio.Event()
        self._resume = asyncio.Event()
        self._resume.set()
        self._running: dict[int, Running] = {}  # the experiments in flight, by number
        self._said = ""
        self.ledger.on_problem = lambda text: self.message(text, "warning")  # a record the loop did not write
        self.space = DiskGuard(self, self._stop)  # a full disk pauses the loop (loop/space.py)
        self.proposer = Proposer(
            settings,
            self.ledger,
            self.store,
            self.agent,
            self.runs_dir,
            sigma=self.sigma,
            running=lambda: [r.exp.description for r in self._running.values()],
            proposing=lambda: self.set_state(LoopState.PROPOSING),
            message=self.message,
        )
        if hasattr(self.agent, "on_status"):  # an LLM agent says why it waits (rate limits, outages)
            self.agent.on_status = lambda text: self.message(text, "warning")
        rerun_lost(self)  # an experiment whose node died (a Ray worker) runs again at once, elsewhere

    # ------------------------------------------------------------------ events, control, public API

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

    def set_state(self, state: LoopState, reason: str = "") -> None:
        self.state = state
        self.emit(ev.STATE, state=str(state), reason=reason)

    def message(self, text: str, level: str = "info") -> None:
        self.emit(ev.MESSAGE, level=level, text=text)

    def pause(self) -> None:
        """Finish the running experiment, then wait before the next one."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def stop(self) -> None:
        """End the running experiments now (interrupted, re-run on the next start) and any agent call, then stop."""
        self._stop.set()
        self._resume.set()
        self.proposer.stop()
        for running in self._running.values():
            running.cancel.set()

    def running(self) -> dict[int, Progress | None]:
        """The experiments in flight, by number, with their latest progress sample."""
        return {n: r.progress for n, r in sorted(self._running.items())}

    def cancel_run(self, number: int) -> bool:
        """Stop one running experiment (recorded as interrupted); the loop goes on."""
        if (running := self._running.get(number)) is not None:
            running.cancel.set()
        return running is not None

    def queue_rerun(self, exp: Experiment, files: dict[str, str]) -> None:
        """Run `exp`'s files again under a new number, before the agent's next proposal."""
        self.proposer.pending.append(replace(rerun(exp, files), kind=ExperimentKind.CHANGE, meta={}))

    def queue_baseline(self, description: str = "baseline (measured again)") -> None:
        """Measure the current best again, `repeats` times: a fresh anchor for the noise floor."""
        again = Proposal(description, [], hypothesis="the current best, unchanged", kind=ExperimentKind.BASELINE)
        self.proposer.pending.append(again)

    def best_values(self) -> list[float] | None:
        """The best's run values, a list that carries their seeds (`.seeds`): paired verdicts use them."""
        best = self.ledger.best(self.settings.metric.direction)
        return pairing.best_runs(best) if best else None

    def sigma(self) -> float | None:
        """The run-to-run noise, pooled over the lineage's experiments that were run more than once,
        carrying (`.paired`) the spread of the paired differences their verdicts recorded."""
        judged = (ExperimentStatus.KEEP, ExperimentStatus.DISCARD)  # this lineage's: the code it started from
        return pairing.noise(e for e in self.ledger.current() if e.status in judged)

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        started = time.monotonic()
        problem = start_problem(self)  # before the lock, branch or worktree exist: a start that cannot
        if problem:  # work leaves nothing behind (the files; an autoresearch checkout's interpreter, data)
            return self.set_state(LoopState.ERRORED, problem)
        try:
            self.launcher = self.launcher or self._make_launcher()  # a sandbox that cannot run: say so first
        except AgentError as exc:
            return self.set_state(LoopState.ERRORED, str(exc))
        if not await self.space.ready():  # a disk already full pauses before recovery writes to it
            return self.set_state(LoopState.STOPPED, "stop requested")
        lockfile = acquire(self.ledger.dir)
        try:
            self.ledger.open()  # its key held for the session; a key that no longer matches refuses the start
            created = self.store.open_or_create()
            lineage.follow(self.settings, self.store, self.ledger, created, self.message, self.slots)
            editable, say = list(self.settings.files.editable), self.message
            self.proposer.pending[:0] = recover(self.ledger, self.store, self.runs_dir, editable, say, self._finished)
            if 1 < len(self.slots) and not elastic.elastic(self.settings):
                self.message(f"{len(self.slots)} slots: " + ", ".join(s.name for s in self.slots))
            await self._workers(started)
        except (AgentError, LedgerError) as exc:
            self.set_state(LoopState.ERRORED, str(exc))
            return
        except Exception as exc:
            log.exception("engine failed")
            self.set_state(LoopState.ERRORED, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            lockfile.close()
        self.set_state(LoopState.STOPPED, "stop requested" if self._stop.is_set() else "limit reached")

    async def _workers(self, started: float) -> None:
        room = elastic.Capacity.of(self.settings, self.launcher, self._stop, self.message)
        tasks = [asyncio.create_task(self._worker(i, spec, started, room)) for i, spec in enumerate(self.slots)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        if room is not None:
            await room.close()
        failed = [t for t in done if t.exception() is not None]
        if failed:  # one slot hit a problem a person must fix: end the others cleanly, then report it
            self.stop()
            if pending:
                await asyncio.wait(pending)
            raise failed[0].exception()  # type: ignore[misc]

    async def _worker(self, index: int, spec: SlotSpec, started: float, room: elastic.Capacity | None) -> None:
        """One slot's loop: get a proposal (drafted ahead while the last run trained), run it, repeat."""
        slot = self.store.slot(index)
        draft: asyncio.Task | None = None
        try:
            while not self._stop.is_set():
                if not self._resume.is_set():
                    self.set_state(LoopState.PAUSED)
                    await self._resume.wait()
                    continue
                if room is not None and not await room.room(index):  # a slot beyond what the cluster holds
                    break
                if self._limit_reached(started) or not await self.space.ready():
                    break
                self.started_here += 1  # reserved now: the other slots see it while this one awaits
                proposal = await (self.proposer.take_draft(draft) if draft else self.proposer.next())
                draft = None
                if proposal is None or self._stop.is_set():
                    self.started_here -= 1
                    break
                try:
                    running, error = await self.space.retry(self.prepare, proposal, slot, spec)
                except Stopped:  # stopped while the agent was asked again: nothing is recorded
                    self.started_here -= 1
                    break
                # Propose-ahead: the agent drafts the next experiment while this one trains, so the
                # GPU does not wait for the LLM. The draft is re-based (or re-asked) if this one is kept.
                if self.settings.run.propose_ahead and not error and not self._limit_reached(started, quiet=True):
                    draft = asyncio.create_task(self.proposer.draft())
                self._running[running.exp.number] = running
                try:
                    await self.space.finish(self._execute(running, error), running)
                finally:
                    self._running.pop(running.exp.number, None)
        finally:
            if room is not None:
                room.end()
            if draft is not None:
                draft.cancel()

    def _limit_reached(self, started: float, quiet: bool = False) -> bool:
        s = self.settings.run
        why = ""
        if s.max_experiments and self.started_here >= s.max_experiments:
            why = f"reached max_experiments = {s.max_experiments}"
        elif s.max_hours and time.monotonic() - started > s.max_hours * 3600:
            why = f"reached max_hours = {s.max_hours}"
        elif s.max_cost_usd and self.ledger.cost_usd() >= s.max_cost_usd:
            why = f"reached max_cost_usd = {s.max_cost_usd:.2f} (spent {self.ledger.cost_usd():.2f})"
        if why and not quiet and why != self._said:
            self._said = why
            self.message(why)
        return bool(why)

    def _make_launcher(self) -> Launcher:
        try:
            return settings_launcher(
                self.settings, self.store.toplevel, self.command, lambda text: self.message(text, "warning")
            )
        except SandboxUnavailable as exc:
            raise AgentError(f'{exc}; install bubblewrap, or set it to "auto" or "off"') from None

    # ------------------------------------------------------------------ one experiment

    async def prepare(self, proposal: Proposal, slot: Slot, spec: SlotSpec) -> tuple[Running, str]:
        """Apply the proposal's edits, commit it in the slot's worktree, and record the experiment as
        running. Returns it, and the reason it cannot run, if any."""
        proposal, parent, old, files, error = await self.proposer.files(proposal)
        # From here on nothing awaits: the number, the commit and the ledger record are one step, so
        # slots running side by side never take the same number.
        exp = Experiment(
            number=self.ledger.next_number(),
            tag=self.settings.tag,
            description=proposal.description,
            hypothesis=proposal.hypothesis,
            parent_commit=parent,
            agent=proposal.agent,
            usage=proposal.usage,
            seeds=[self.settings.run.seed],
            started_at=utc_now(),
            meta=dict(proposal.meta),
            diff=pr.unified(old, files),
            kind=proposal.kind,
            rerun_of=proposal.rerun_of,
            slot=spec.name,
            edits=[asdict(e) for e in proposal.edits],
            base=proposal.base,
            rebased=proposal.rebased,
            lineage=self.ledger.current_lineage(),
            port_of=proposal.port_of,
        )
        slot.checkout(parent)
        exp.commit = slot.commit(
            files, commit_message(exp, str(ExperimentStatus.RUNNING), self.settings.metric.name), exp.number
        )
        self.ledger.append(conditions.stamp(exp, self.settings, self.store, spec))
        self.emit(ev.EXPERIMENT_STARTED, experiment=exp.to_json())
        return Running(exp, slot, spec), error

    def _plan(self, running: Running) -> RunPlan:
        s, exp = self.settings, running.exp

        def on_progress(stage: str, p: Progress) -> None:
            running.progress = p
            self.emit(ev.PROGRESS, number=exp.number, progress=asdict(p), stage=stage)

        files = [*s.files.editable, *s.files.protected]  # the judge's pristine copy comes from the commit
        plan = RunPlan(
            launcher=self.launcher or self._make_launcher(),
            workdir=running.slot.workdir,
            runs_dir=self.runs_dir / str(exp.number),
            command=self.command,
            budget=s.budget,
            metric_name=s.metric.name,
            seed=s.run.seed,
            compile_files=list(s.files.editable),
            cuda_visible_devices=running.spec.cuda_visible_devices,
            threads=running.spec.threads,
            cancel=running.cancel,
            on_progress=on_progress,
            protected_changed=lambda: running.slot.changed_since(s.files.protected, exp.commit),
            committed=lambda: {f: self.store.file_bytes(f, exp.commit) for f in files},
            protected=list(s.files.protected),
        )
        exp.self_reported = not plan.judged
        return plan

    def _more(self, exp: Experiment) -> Callable[[list[float]], bool]:
        """Whether another full run is wanted: the baseline's repeats, the policy's confirmation, or a
        keep filled up to the seeds later candidates pair with (pairing.wants_more)."""

        def more(values: list[float]) -> bool:
            if exp.is_baseline:
                return len(values) < self.policy_repeats
            seeds, direction = pairing.run_seeds(self.settings.run.seed, len(values)), self.settings.metric.direction
            decision = pairing.decide(self.policy, values, seeds, self.best_values(), self.sigma(), direction)
            exp.decision = {"verdict": str(decision.verdict), "z": decision.z, "sigma": decision.sigma}
            again, why = pairing.wants_more(self.policy, decision, len(values))
            if again:
                self.message(f"#{exp.number}: {why}")
            return again

        return more

    async def _execute(self, running: Running, error: str = "") -> Experiment:
        exp = running.exp
        if not error:
            self.set_state(LoopState.RUNNING, exp.description)
        runs = await execute(self._plan(running), self._more(exp), smoke=not exp.is_baseline, error=error)
        self.set_state(LoopState.DECIDING, exp.description)
        judge(exp, runs, self.policy, self.best_values(), self.sigma(), self.settings)
        return self.record(exp, running.slot)

    def record(self, exp: Experiment, slot: Slot) -> Experiment:
        """Amend the experiment's commit with its verdict, move the branch forward if it is kept, write
        the final record. A keep whose base is no longer the best (another slot kept something while it
        ran) does not move the branch: it is queued again on top of the new best."""
        if exp.status == ExperimentStatus.KEEP and not exp.is_baseline and self.store.head() != exp.parent_commit:
            exp.status = ExperimentStatus.DISCARD
            exp.decision_reason += "; but the best moved on while it ran: queued again on top of it"
            again = pr.requeue(exp, self.settings, self.store)
            if again is not None:
                self.proposer.pending.append(again)
        exp.commit = slot.amend(commit_message(exp, str(exp.status), self.settings.metric.name), exp.number)
        if exp.status == ExperimentStatus.KEEP and not self.store.advance(exp.commit, exp.parent_commit):
            raise RuntimeError(f"branch {self.store.branch} moved during the decision of #{exp.number}")
        exp.diff = self.store.diff(exp.parent_commit, exp.commit) or exp.diff
        exp.node = exp.node or ports.node_of(self.runs_dir / str(exp.number))  # a Ray node's placement.json
        self.ledger.finalize(exp)
        self.proposer.finished(exp)
        self._finished(exp)
        return exp

    def _finished(self, exp: Experiment) -> None:
        self.emit(ev.EXPERIMENT_FINISHED, experiment=exp.to_json())
