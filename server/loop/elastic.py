"""Slots that follow a Ray cluster: with `[run] executor = "ray"` and `slots = "auto"`, as many experiments
train at once as the cluster's live nodes hold runs of the lineage's request (1 GPU, or 1 CPU, or its
custom resources), re-read every CAPACITY_S: a node that joins is used at once, one that goes leaves its
slot waiting. The engine makes up to MAX_SLOTS slot workers (their worktrees only on first use); slot i
waits before its next experiment while the cluster holds i runs or fewer, so no idea is drafted for a
run that could only wait in Ray's queue. Elsewhere (the local executor, a number of slots) nothing waits.
Must not import: ray (the launcher asks the cluster), pygls, rich.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nightlab.server.core.settings import Settings
from nightlab.server.run.slots import SlotSpec, resolve_slots

log = logging.getLogger(__name__)
MAX_SLOTS = 64  # at most this many runs at once from one lineage
CAPACITY_S = 5.0


def elastic(settings: Settings) -> bool:
    return settings.run.executor == "ray" and settings.run.slots == "auto"


def slots(settings: Settings) -> list[SlotSpec]:
    """The engine's slots: for elastic ones, MAX_SLOTS of the kind "auto" gives here (the first keeps
    its name, so a lineage's recorded device class stays the same)."""
    base = resolve_slots(settings.run.slots)
    if not elastic(settings):
        return base
    return [replace(base[0], name=base[0].name if i == 0 else f"{base[0].name}.{i}") for i in range(MAX_SLOTS)]


class Capacity:
    """How many runs the cluster holds now (`launcher.capacity()`, blocking, asked in a thread), and the
    slots that wait for room."""

    def __init__(self, capacity: Callable[[], int], stop: asyncio.Event, say: Callable[[str], None]):
        self._capacity, self._stop, self._say = capacity, stop, say
        self.now: int | None = None  # None: not asked yet
        self.ended = False  # a slot's loop ended (a stop, a limit, no more ideas): the waiting ones end too
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    @classmethod
    def of(cls, settings: Settings, launcher: Any, stop: asyncio.Event, say: Callable[[str], None]) -> Capacity | None:
        capacity = getattr(launcher, "capacity", None)
        return cls(capacity, stop, say) if elastic(settings) and callable(capacity) else None

    async def room(self, index: int) -> bool:
        """Wait until slot `index` may run (the cluster holds more than `index` runs); False once the loop
        stops or another slot's loop ended."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch())
        while not (self._stop.is_set() or self.ended) and (self.now is None or index >= self.now):
            self._changed.clear()
            waits = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(self._stop.wait())]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
        return not (self._stop.is_set() or self.ended)

    def end(self) -> None:
        """A slot's loop ended: the slots waiting for room end too (the loop winds down)."""
        self.ended = True
        self._changed.set()

    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                now = await asyncio.to_thread(self._capacity)
            except Exception as exc:  # the cluster did not answer: the slots keep what they had, and at
                log.warning("asking the cluster what it holds failed: %s", exc)  # first one runs: its launch
                now = self.now if self.now is not None else 1  # says what is wrong, as without elastic slots
            if now != self.now:
                self._say(self._words(now))
                self.now = now
                self._changed.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), CAPACITY_S)

    def _words(self, now: int) -> str:
        if now == 0:
            return "no node of the Ray cluster has what a run asks for: the slots wait for one to join"
        shown = min(now, MAX_SLOTS)
        grew = "" if self.now is None else (" (a node joined)" if now > self.now else " (a node went)")
        return f"slots follow the Ray cluster: {shown} run{'s' if shown != 1 else ''} at once{grew}"

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
