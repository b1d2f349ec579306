"""The control endpoint of a loop process: a Unix socket served on the engine's event loop, speaking
protocol/control.py's line-delimited JSON to any number of clients (the CLI's attach, status, stop; the
language server).

Owner-only: the socket is 0600 and every peer's uid is checked (SO_PEERCRED) before anything is sent.
The loop never waits for a client: each has a bounded queue of lines, filled by the engine's events (a
cheap, synchronous listener) and drained by the client's own writer task; a client that lets its queue
fill is sent a goodbye and dropped. A line that is not a command gets an error reply; one over MAX_LINE
ends the connection (what follows it cannot be framed). Commands go through the engine's public API.

Must not import: rich, typer, pygls, lsprotocol (clients render; this only serves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections import deque
from pathlib import Path
from typing import Any

from nightlab.protocol import control as c
from nightlab.protocol import events as ev
from nightlab.protocol.convert import budget_text
from nightlab.protocol.types import ClusterPayload
from nightlab.server.control import paths
from nightlab.server.core.types import Experiment
from nightlab.server.record.lock import loop_owner

log = logging.getLogger(__name__)
QUEUE_LINES = c.CLIENT_QUEUE  # lines a client may fall behind before it is dropped (minutes of progress events)
DRAIN_S = 2.0  # how long the last lines (the final state, the goodbye) may take to reach clients


class _Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_LINES)  # None: close after the rest
        self.dropped = False
        self.task: asyncio.Task | None = None  # its writer

    def send(self, line: bytes | None) -> bool:
        try:
            self.queue.put_nowait(line)
            return True
        except asyncio.QueueFull:
            return False

    async def write_loop(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while (line := await self.queue.get()) is not None:
                self.writer.write(line)
                await self.writer.drain()
        self.writer.close()


class ControlServer:
    """Serves one engine. Build it before `engine.run()` (it records the events from the first), then
    `await start()`; `await close(...)` once the loop ended."""

    def __init__(self, engine: Any, log_file: str | None = None):
        self.engine = engine
        self.ledger_dir = Path(engine.ledger.dir)
        self.log_file = log_file
        self.path: Path | None = None
        self.clients: set[_Client] = set()
        self.recent: deque[tuple[dict[str, Any], int]] = deque(maxlen=c.RECENT_EVENTS)  # with its line's size
        self.started: dict[int, dict[str, Any]] = {}  # experiments in flight: their started record
        self.progress: dict[int, dict[str, Any]] = {}  # their last progress event
        self.reason = ""
        self.cluster: dict[str, Any] | None = None  # the last cluster event's view (the Ray executor)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._made: list[Path] = []
        engine.subscribe(self.on_event)

    # ------------------------------------------------------------------ serving

    async def start(self) -> Path | None:
        """Listen; None (and nothing served) when another live loop holds the tag: its run fails on the lock."""
        owner = loop_owner(self.ledger_dir)
        if owner and owner != os.getpid():
            return None
        path = paths.socket_path(self.ledger_dir)
        if path.exists() or path.is_symlink():
            if paths.answers(path):  # a live loop's, without its lock yet: leave it alone
                return None
            path.unlink()  # stale: its loop was killed
        # a start that cannot work leaves nothing behind: the folders made here go again if still empty
        self._made = [d for d in (self.ledger_dir.parent, self.ledger_dir) if not d.exists()]
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        self._server = await asyncio.start_unix_server(self._connected, path=os.fspath(path), limit=c.MAX_LINE + 1)
        os.chmod(path, 0o600)  # peers are also checked by uid: nothing is sent before
        self.path = path
        paths.write_info(self.ledger_dir, paths.LoopInfo(os.getpid(), os.fspath(path), self.log_file))
        return path

    async def close(self, message: str = "") -> None:
        """The loop ended: tell every client (goodbye), let the last lines go out, stop listening."""
        if self._server is None:
            return
        self._server.close()
        state = str(self.engine.state)
        message = message or f"the loop {state}" + (f": {self.reason}" if self.reason else "")
        goodbye = c.encode(c.ControlGoodbye("loopEnded", message, state))
        for client in list(self.clients):
            if not (client.send(goodbye) and client.send(None)):
                client.writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=DRAIN_S)
        for task in list(self._tasks):
            task.cancel()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        paths.remove_info(self.ledger_dir, os.getpid())
        for folder in reversed(self._made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._server = None

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not _same_user(writer.get_extra_info("socket")):
            writer.close()
            return
        client = _Client(reader, writer)
        client.send(c.encode(c.ControlHello(c.CONTROL_VERSION, self.snapshot(), self._recent())))
        self.clients.add(client)  # in the same step as the hello: no event is lost or sent twice
        writing = client.task = asyncio.create_task(client.write_loop())
        self._tasks.add(writing)
        writing.add_done_callback(self._tasks.discard)
        try:
            await self._read(client)
        finally:
            self.clients.discard(client)
            if not client.send(None):
                writer.close()

    async def _read(self, client: _Client) -> None:
        while not client.dropped:
            try:
                line = await client.reader.readline()
            except ValueError:  # over the limit: what follows cannot be framed
                size = f"over {c.MAX_LINE:,} bytes"
                client.send(c.encode(c.ControlErrorReply(None, "tooLarge", f"a line {size}: at most {c.MAX_LINE:,}")))
                client.send(c.encode(c.ControlGoodbye("tooLarge", f"closing: a line {size}")))
                return
            except (ConnectionError, OSError):
                return
            if not line:
                return
            if line.strip():
                client.send(c.encode(self.answer(line)))

    # ------------------------------------------------------------------ events

    def on_event(self, event: dict[str, Any]) -> None:
        """The engine's listener: record, then queue the line for every client (never waits)."""
        sent, line = fit(event)  # what goes out: the event, or a slimmer copy where it is too big for a line
        kind = event.get("type")
        if kind == ev.STATE:
            self.reason = event.get("reason") or ""
        elif kind == ev.EXPERIMENT_STARTED:
            self.started[event["experiment"]["number"]] = sent.get("experiment") or {
                "number": event["experiment"]["number"]
            }
        elif kind == ev.PROGRESS:
            self.progress[event["number"]] = event
        elif kind == ev.CLUSTER:
            self.cluster = event.get("cluster")
        elif kind == ev.EXPERIMENT_FINISHED:
            self.started.pop(event["experiment"]["number"], None)
            self.progress.pop(event["experiment"]["number"], None)
        self.recent.append((sent, len(line)))
        for client in list(self.clients):
            if not client.send(line):
                self._drop(client)

    def _recent(self) -> list[dict[str, Any]]:
        """The last events, oldest first, as many as fit in half a line: the hello stays one line."""
        out, room = [], c.MAX_LINE // 2
        for event, size in reversed(self.recent):
            room -= size
            if room < 0:
                break
            out.append(event)
        return out[::-1]

    def _drop(self, client: _Client) -> None:
        """A client that fell QUEUE_LINES behind: say why past its queue, and close it."""
        client.dropped = True
        self.clients.discard(client)
        why = f"closing: this client fell {QUEUE_LINES} lines behind the loop (it reads too slowly)"
        with contextlib.suppress(Exception):
            client.writer.write(c.encode(c.ControlGoodbye("tooSlow", why)))
        client.writer.close()
        if client.task is not None:
            client.task.cancel()
        log.warning("control: dropped a client that read too slowly")

    # ------------------------------------------------------------------ where the loop stands

    def snapshot(self) -> c.LoopSnapshot:
        e, s = self.engine, self.engine.settings
        running = []
        for number in e.running() or self.started:
            record = self.started.get(number)
            if record is None:
                exp = e.ledger.get(number)
                record = exp.to_json() if exp is not None else {"number": number}
            p = self.progress.get(number) or {}
            running.append(c.RunningExperiment(number, record, p.get("progress"), p.get("stage")))
        b = s.budget
        settings = c.ControlSettings(
            budget_mode=b.mode,
            budget_amount=float(b.seconds if b.mode == "time" else b.tokens),
            budget=budget_text(b.mode, b.seconds, b.tokens),
            policy=s.policy.name,
            agent=s.agent.name,
            model=m if isinstance(m := getattr(e.agent, "model", None), str) else None,
            sandbox=s.run.sandbox,
            metric_name=s.metric.name,
            direction=s.metric.direction,
            baseline_repeats=int(e.policy_repeats),
            max_experiments=int(s.run.max_experiments or 0),
        )
        cluster = ClusterPayload.from_wire(self.cluster) if self.cluster else None
        return c.LoopSnapshot(
            os.getpid(), s.tag, str(s.workspace), str(e.state), self.reason, settings, running, self.log_file, cluster
        )

    # ------------------------------------------------------------------ commands

    def answer(self, line: bytes) -> c.ControlReply | c.ControlErrorReply:
        try:
            message = c.decode(line)
        except c.ControlError as exc:
            return c.ControlErrorReply(exc.id if isinstance(exc.id, (int, str)) else None, exc.code, str(exc))
        if not isinstance(message, c.ControlCommand):
            return c.ControlErrorReply(None, "invalid", f"a client sends commands, not {c.TYPE_OF[type(message)]!r}")
        try:
            text = self._do(message)
        except _Refused as exc:
            return c.ControlErrorReply(message.id, exc.code, str(exc))
        except Exception as exc:  # a command must never take the loop down
            log.exception("control command %s failed", message.command)
            return c.ControlErrorReply(message.id, "failed", f"{message.command} failed: {exc}")
        loop = self.snapshot() if message.command == "status" else None
        return c.ControlReply(message.id, message.command, str(self.engine.state), text, loop)

    def _do(self, cmd: c.ControlCommand) -> str:
        e = self.engine
        if cmd.command == "pause":
            e.pause()
            return "pausing after the running experiment"
        if cmd.command == "resume":
            e.resume()
            return "resumed"
        if cmd.command == "stop":
            e.stop()
            return "stopping: the running experiment is recorded as interrupted and runs again next time"
        if cmd.command == "baseline":
            e.queue_baseline()
            return "the baseline (the current best) queued to be measured again"
        if cmd.command == "rerun":
            return self._rerun(cmd.number)
        if cmd.command == "cancel":
            if cmd.number is None:
                raise _Refused("cancel needs the running experiment's number", "invalid")
            if not e.cancel_run(cmd.number):
                raise _Refused(f"experiment #{cmd.number} is not running", "conflict")
            return f"experiment #{cmd.number} stopped; it is recorded as interrupted"
        return f"the loop is {e.state}" + (f": {self.reason}" if self.reason else "")

    def _rerun(self, number: int | None) -> str:
        if number is None:
            raise _Refused("rerun needs the experiment's number", "invalid")
        exp: Experiment | None = self.engine.ledger.get(number)
        if exp is None or not exp.commit:
            raise _Refused(f"there is no experiment #{number} on tag {self.engine.settings.tag}", "invalid")
        from nightlab.server.record.store import StoreError  # lazy: git's import is slow, for every CLI command

        try:
            files = {p: self.engine.store.read_file(p, exp.commit) for p in self.engine.settings.files.editable}
        except StoreError as exc:
            raise _Refused(str(exc), "conflict") from None
        self.engine.queue_rerun(exp, files)
        return f"experiment #{number} queued to run again"


BULKY = ("diff", "edits")  # an experiment record's parts a client can read from the ledger or the store
CUT_AT = 4000  # characters of a long text field kept when an event is too big for a line


def fit(event: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The event and its line, made to fit MAX_LINE: an experiment record over it loses its diff and
    edits and has long texts cut (a 200 KB hypothesis), and says "truncated"; past that, only its kind."""
    line = c.encode(c.ControlEvent(event))
    if len(line) <= c.MAX_LINE:
        return event, line
    slim = dict(event, truncated=True)
    if isinstance(event.get("experiment"), dict):
        slim["experiment"] = {
            k: (v[:CUT_AT] + " ..." if isinstance(v, str) and len(v) > CUT_AT else v)
            for k, v in event["experiment"].items()
            if k not in BULKY
        }
    line = c.encode(c.ControlEvent(slim))
    if len(line) > c.MAX_LINE:
        slim = {"type": event.get("type"), "truncated": True}
        line = c.encode(c.ControlEvent(slim))
    return slim, line


class _Refused(Exception):
    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def _same_user(sock: socket.socket | None) -> bool:
    """Whether the peer runs as this user (Linux's SO_PEERCRED; elsewhere the socket's 0600 mode decides)."""
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()
