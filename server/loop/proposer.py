"""Where the next experiment comes from: queued re-runs and baselines first, then the baseline when
there is no best yet, then the agent: one call at a time, told every idea in flight (so parallel
slots never run the same one), drafted ahead while a run trains and re-based if that run is kept.
`stop()` cancels the agent's call in progress (an API that never answers, a retry's wait): nothing is
recorded for it, since no experiment exists before a proposal does, and the next start asks again.
Must not import: pygls, rich, typer, the runner, the engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from nightlab.server.agents.base import AgentError, ProposalError
from nightlab.server.changes.edits import EditError
from nightlab.server.core.settings import Settings
from nightlab.server.core.types import Experiment, ExperimentContext, ExperimentKind, ExperimentStatus, Proposal
from nightlab.server.loop import proposals as pr
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Store


class Stopped(Exception):
    """The loop stopped while the agent was asked again (its edit did not apply): nothing is recorded."""


def baseline() -> Proposal:
    return Proposal("baseline", [], hypothesis="the unchanged code, for reference", kind=ExperimentKind.BASELINE)


class Proposer:
    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        store: Store,
        agent: Any,
        runs_dir: Path,
        *,
        sigma: Callable[[], float | None],
        running: Callable[[], list[str]],
        proposing: Callable[[], None],
        message: Callable[[str], None],
    ):
        self.settings, self.ledger, self.store, self.agent, self.runs_dir = settings, ledger, store, agent, runs_dir
        self._sigma, self._running, self._proposing, self._message = sigma, running, proposing, message
        self.pending: list[Proposal] = []  # re-runs and baselines queued: they come before the agent's
        self._reserved: list[str] = []  # proposals made but not finished: no slot gets the same idea twice
        self._lock = asyncio.Lock()
        self._baseline_running = False
        self._best_ready = asyncio.Event()
        self._stopped = False
        self._call: asyncio.Future[Proposal] | None = None  # the agent's call in progress (one at a time)
        # Set by a swarm of lineages (loop/swarm.py): the ideas in flight in the other lineages, what
        # they kept, and this lineage's focus; all shown to the agent.
        self.others: Callable[[], list[str]] = list
        self.elsewhere: Callable[[], list[str]] = list
        self.focus = ""

    # ------------------------------------------------------------------ what the engine asks

    def wake(self) -> None:
        """A slot waiting for another's baseline wakes up (to see a stop)."""
        self._best_ready.set()

    def stop(self) -> None:
        """The loop is stopping: cancel the agent's call in progress, start no other, wake the waiters."""
        self._stopped = True
        self.wake()
        if self._call is not None:
            self._call.cancel()

    def finished(self, exp: Experiment) -> None:
        """An experiment has its verdict: its idea is free again; a baseline (or keep) wakes the waiters."""
        self._release(exp.description)
        if exp.is_baseline:
            self._baseline_running = False
        if exp.status == ExperimentStatus.KEEP or exp.is_baseline:
            self._best_ready.set()

    async def next(self) -> Proposal | None:
        if self.pending:
            proposal = self.pending.pop(0)
            again = self.ledger.get(proposal.rerun_of) if proposal.rerun_of and not proposal.port_of else None
            return replace(proposal, port_of=again.port_of) if again else proposal  # a port run again stays one
        direction = self.settings.metric.direction
        while self._baseline_running and self.ledger.best(direction) is None:
            if self._stopped:  # woken by the stop (which sets the event for good): nothing more to start
                return None
            await self._best_ready.wait()  # another slot runs the baseline: nothing to propose against yet
        if self.ledger.best(direction) is None:
            crashed = [e for e in self.ledger.current() if e.is_baseline and e.status == ExperimentStatus.CRASH]
            if crashed:
                e = crashed[-1]
                raise AgentError(
                    f"the baseline (experiment {e.number}, your unchanged code) crashed: {e.decision_reason}; "
                    f"fix it and commit, then run again: the loop starts from your new commit "
                    f"(log: {self.runs_dir / str(e.number) / 'run.log'})"
                )
            self._baseline_running = True
            self._best_ready.clear()
            return baseline()
        self._proposing()
        return await self._ask()

    async def draft(self) -> Proposal | None:
        """The next proposal, drafted against the current best while an experiment trains."""
        if self.pending or self.ledger.best(self.settings.metric.direction) is None:
            return None  # a re-run or the baseline comes next: nothing to ask the agent
        return await self._ask()

    async def take_draft(self, draft: asyncio.Task) -> Proposal | None:
        proposal = await draft
        if proposal is None:
            return await self.next()
        head = self.store.head()
        if proposal.base in ("", head) or not proposal.edits:
            return proposal
        # The experiment that ran meanwhile was kept: the draft was written against its parent.
        try:
            pr.apply(self.settings, {p: self.store.read_file(p) for p in self.settings.files.editable}, proposal)
        except EditError as exc:
            self._release(proposal.description)
            self._message(f"the drafted proposal no longer applies after the last keep ({exc.reason}); asking again")
            return await self.next()
        return replace(proposal, base=head, rebased=True)

    async def files(self, proposal: Proposal) -> pr.Files:
        """The files the proposal makes; an LLM whose edit does not apply is told why and asked once more."""

        async def again(feedback: str) -> Proposal:
            self._release(proposal.description)
            retry = await self._ask(feedback)
            if retry is None:
                raise Stopped()
            return retry

        retry = getattr(self.agent, "accepts_feedback", False) and proposal.kind != ExperimentKind.BASELINE
        retry = retry and not proposal.port_of  # a port that no longer applies is not the agent's to fix
        return await pr.files_for(self.settings, self.store, proposal, again if retry else None)

    # ------------------------------------------------------------------ the agent

    def in_flight(self) -> list[str]:
        """This lineage's ideas in flight: running, or proposed and not finished yet (a draft included)."""
        return list(dict.fromkeys(self._running() + self._reserved))

    def _context(self, feedback: str = "") -> ExperimentContext:
        in_flight = list(dict.fromkeys(self.in_flight() + self.others()))
        ctx = pr.context(self.settings, self.ledger, self.store, self._sigma(), in_flight)
        return replace(ctx, feedback=feedback, focus=self.focus, elsewhere=self.elsewhere())

    async def _ask(self, feedback: str = "") -> Proposal | None:
        """The agent's proposal; one it could not make valid becomes a crash record, not a stop; None
        once `stop()` was called (its call cancelled). Its context is built once the call may start, so
        it sees the latest best and every idea in flight."""
        async with self._lock:
            if self._stopped:
                return None
            ctx = self._context(feedback)
            call = self._call = asyncio.ensure_future(self.agent.propose(ctx))
            try:
                await asyncio.wait([call])  # returns when the call ends, cancelled by stop() included
            finally:
                call.cancel()  # a no-op once it ended; a caller cancelled (a dropped draft) takes it along
                self._call = None
            if call.cancelled():
                return None
            try:
                proposal = call.result()
            except ProposalError as exc:
                usage = dict(getattr(exc, "usage", {}) or {})
                return Proposal("invalid proposal", [], agent=self.agent.name, usage=usage, invalid=str(exc))
            proposal.base = proposal.base or self.store.head()
            self._reserved.append(proposal.description)
            return proposal

    def _release(self, description: str) -> None:
        if description in self._reserved:
            self._reserved.remove(description)
