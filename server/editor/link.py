"""An editor's link to the loop process of one workspace folder (`nightlab run`, detached or in a terminal):
the language server never runs the engine itself, it attaches to the tag's loop through its control socket
(control/client.py) and follows it.

    link = LoopLink(ledger_dir, tag, emit)
    await link.attach()            # a loop runs: follow it (its state and experiments in flight are emitted)
    await link.command("pause")    # a ControlReply; SessionError when refused or the link is gone
    link.watch()                   # while none runs: look every WATCH_S for one started elsewhere

`emit` gets engine events (protocol/events.py's dicts) as if the engine were here: on attach, the loop's
state and a started event (with the latest progress) for each experiment in flight; then every event as
it happens; when the link ends, a state event saying how (the loop ended, or it died: `died` true, with
its log's last line).

Must not import: pygls, lsprotocol, rich, typer, the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nightlab.protocol import control as c
from nightlab.protocol import events as ev
from nightlab.server.control import paths
from nightlab.server.control.client import Connection, ControlRefused, LinkLost, connect_loop, ended_how

log = logging.getLogger(__name__)

WATCH_S = 2.0  # how often a folder with no loop looks for one started from a terminal


class LinkError(Exception):
    """A command the loop refused, or could not be sent; `kind` is SessionError's (invalid | conflict)."""

    def __init__(self, message: str, kind: str = "conflict"):
        super().__init__(message)
        self.kind = kind


class LoopLink:
    def __init__(self, ledger_dir: Path, tag: str, emit: Callable[[dict[str, Any]], None]):
        self.ledger_dir, self.tag, self.emit = Path(ledger_dir), tag, emit
        self.conn: Connection | None = None
        self.snapshot: c.LoopSnapshot | None = None  # the hello's, its state kept up to date
        self.progress: dict[int, dict[str, Any]] = {}  # number -> latest progress (the events' dict)
        self.died: str = ""  # how the last loop ended, when it died without stopping
        self.final: str = "idle"  # the state the last loop ended in (stopped, errored), once it ended
        self._follow: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self._closing = False

    # ------------------------------------------------------------------ where it stands

    @property
    def attached(self) -> bool:
        return self.conn is not None and not self.conn.closed

    @property
    def state(self) -> str:
        return str(self.snapshot.state) if self.attached and self.snapshot else self.final

    @property
    def running(self) -> list[int]:
        return sorted(self.progress) if self.attached else []

    # ------------------------------------------------------------------ attaching

    async def attach(self) -> bool:
        """Follow the tag's loop if one runs; whether one does. A loop that died is remembered (`died`)."""
        if self.attached:
            return True
        try:
            conn = await connect_loop(self.ledger_dir, self.tag)
        except paths.NoLoop as exc:
            self.died = str(exc) if exc.died else ""
            return False
        except (OSError, asyncio.TimeoutError, LinkLost) as exc:
            log.warning("attaching to the loop of %s failed: %s", self.ledger_dir, exc)
            return False
        self.conn, self.snapshot, self.died = conn, conn.hello.loop, ""
        hello = conn.hello.loop
        self.progress = {r.number: dict(r.progress or {}) for r in hello.running}
        self.emit({"type": ev.STATE, "state": str(hello.state), "reason": hello.reason})
        for r in hello.running:
            self.emit({"type": ev.EXPERIMENT_STARTED, "experiment": r.experiment})
            if r.progress:
                self.emit({"type": ev.PROGRESS, "number": r.number, "progress": r.progress, "stage": r.stage or "run"})
        self._follow = asyncio.create_task(self._follow_events(conn))
        return True

    def watch(self) -> None:
        """Look for a loop started elsewhere (a terminal's `nightlab run`) every WATCH_S while none is
        attached, and attach to it when it answers."""
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watching())

    async def _watching(self) -> None:
        while not self._closing:
            if not self.attached:
                info = paths.read_info(self.ledger_dir)
                if info is not None and paths.answers(info.socket, timeout=0.5):
                    await self.attach()
            await asyncio.sleep(WATCH_S)

    async def _follow_events(self, conn: Connection) -> None:
        async for event in conn.events():
            kind = event.get("type")
            if kind == ev.STATE and self.snapshot is not None:
                self.snapshot.state, self.snapshot.reason = event.get("state", "idle"), event.get("reason", "")
            elif kind == ev.EXPERIMENT_STARTED:
                self.progress.setdefault(int(event["experiment"]["number"]), {})
            elif kind == ev.PROGRESS:
                self.progress[int(event["number"])] = dict(event.get("progress") or {})
            elif kind == ev.EXPERIMENT_FINISHED:
                self.progress.pop(int(event["experiment"]["number"]), None)
            self.emit(event)
        if self._closing:
            return
        died, message = await ended_how(conn, self.ledger_dir)
        self.progress = {}
        self.died = message if died else ""
        final = conn.ending.state if conn.ending is not None and conn.ending.state else "stopped"
        self.final = "errored" if died else str(final)
        self.emit({"type": ev.STATE, "state": self.final, "reason": message, "died": died})

    # ------------------------------------------------------------------ commands

    async def command(self, name: str, number: int | None = None) -> c.ControlReply:
        """Send a control command; LinkError when the loop refuses it or the link is gone."""
        if not self.attached or self.conn is None:
            raise LinkError("the loop is not running in this workspace; start it first")
        try:
            return await self.conn.command(name, number)
        except ControlRefused as exc:
            raise LinkError(exc.error.message, "invalid" if exc.error.code == "invalid" else "conflict") from None
        except (LinkLost, ConnectionError, asyncio.TimeoutError) as exc:
            raise LinkError(f"the loop did not answer {name}: {exc or 'no reply'}") from None

    async def ended(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the link to end (the loop stopped); whether it did."""
        if self._follow is None:
            return True
        done, _ = await asyncio.wait([self._follow], timeout=timeout)
        return bool(done)

    async def close(self) -> None:
        """Let go of the loop (it goes on running)."""
        self._closing = True
        for task in (self._watch, self._follow):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.conn is not None:
            await self.conn.close()
        self.conn = None
