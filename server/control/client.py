"""A client of a loop process's control endpoint, for the CLI and the language server alike (asyncio).

    conn = await connect_loop(ledger_dir, tag)    # NoLoop when none runs (or it died: the message says so)
    conn.hello.loop.state                         # where it stands, the settings, what is in flight
    reply = await conn.command("pause")           # a Reply; ControlRefused carries an ErrorReply
    async for event in conn.events(): ...         # engine events until the loop ends or the link drops
    conn.ending                                   # then: the Goodbye, or None when the loop died

One reader task takes every line: replies resolve their command's future, events and the goodbye go to a
queue, so a caller may send commands while another task follows the events.

Must not import: rich, typer, pygls, lsprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nightlab.protocol import control as c
from nightlab.server.control import paths

CONNECT_S = 5.0  # for the hello
REPLY_S = 30.0  # a command's answer (the loop answers at once; this only bounds a hung process)


class ControlRefused(Exception):
    """The loop answered a command with an error."""

    def __init__(self, error: c.ControlErrorReply):
        super().__init__(error.message)
        self.error = error


class LinkLost(Exception):
    """The connection ended before the answer came."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: c.ControlHello):
        self.reader, self.writer, self.hello = reader, writer, hello
        self.pid = hello.loop.pid
        self.ending: c.ControlGoodbye | None = None  # the server's goodbye, once it came
        self.closed = False
        self._ids = itertools.count(1)
        self._waiting: dict[Any, asyncio.Future] = {}
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # unbounded: we read our own
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while line := await self.reader.readline():
                try:
                    message = c.decode(line)
                except c.ControlError:
                    continue  # a newer server's message this client does not know
                if isinstance(message, c.ControlEvent):
                    self._events.put_nowait(message.event)
                elif isinstance(message, (c.ControlReply, c.ControlErrorReply)):
                    future = self._waiting.pop(message.id, None)
                    if future is not None and not future.done():
                        future.set_result(message)
                elif isinstance(message, c.ControlGoodbye):
                    self.ending = message
        except (ConnectionError, OSError, ValueError):  # ValueError: a line over the limit
            pass
        finally:
            self.closed = True
            self._events.put_nowait(None)
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(LinkLost("the loop closed the connection"))

    async def command(self, name: str, number: int | None = None, timeout: float = REPLY_S) -> c.ControlReply:
        """Send a command and wait for its reply; ControlRefused for an error reply, LinkLost if none came."""
        if self.closed:
            raise LinkLost("the connection to the loop is closed")
        ident = next(self._ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        self.writer.write(c.encode(c.ControlCommand(ident, name, number)))
        await self.writer.drain()
        answer = await asyncio.wait_for(future, timeout)
        if isinstance(answer, c.ControlErrorReply):
            raise ControlRefused(answer)
        return answer

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Each engine event from the loop as it happens, until the connection ends."""
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def connect(path: str | os.PathLike, timeout: float = CONNECT_S) -> Connection:
    """A connection to the socket at `path`, once its hello came."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_unix_connection(os.fspath(path), limit=c.MAX_LINE + 1), timeout
    )
    try:
        first = c.decode(await asyncio.wait_for(reader.readline(), timeout))
    except (c.ControlError, asyncio.TimeoutError, ValueError) as exc:
        writer.close()
        raise LinkLost(f"the loop's control socket did not say hello: {exc}") from None
    if not isinstance(first, c.ControlHello):
        writer.close()
        raise LinkLost(f"the loop's control socket began with {c.TYPE_OF[type(first)]!r}, not a hello")
    return Connection(reader, writer, first)


async def connect_loop(ledger_dir: Path, tag: str = "", timeout: float = CONNECT_S) -> Connection:
    """A connection to the loop running on `ledger_dir`; NoLoop when none runs (or it died: say so)."""
    info = paths.find_loop(ledger_dir, tag)
    try:
        return await connect(info.socket, timeout)
    except (OSError, asyncio.TimeoutError):  # it ended between the look and the connect
        return await connect(paths.find_loop(ledger_dir, tag).socket, timeout)


def process_gone(pid: int) -> bool:
    """Whether process `pid` has ended: no such process, or a zombie whose every thread has ended (a
    killed process's main thread turns zombie first; its other threads hold its files, the control socket
    among them, a moment longer)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        states = [(t / "stat").read_text().rpartition(")")[2].split()[0] for t in Path(f"/proc/{pid}/task").iterdir()]
    except (OSError, IndexError):
        return False
    return all(state in ("Z", "X") for state in states)


async def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for process `pid` to end; whether it did."""
    end = time.monotonic() + timeout
    while not process_gone(pid):
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(0.1)
    return True


async def ended_how(conn: Connection, ledger_dir: Path) -> tuple[bool, str]:
    """Once the connection ended: (died, what to say). A goodbye means the loop ended; none means it died."""
    if conn.ending is not None and conn.ending.code == "loopEnded":
        return False, conn.ending.message
    if conn.ending is not None:  # the loop closed this client (too slow); the loop itself goes on
        return False, conn.ending.message
    await wait_gone(conn.pid, 3.0)
    info = paths.read_info(ledger_dir)
    if info is not None and info.pid == conn.pid:
        end = time.monotonic() + 3.0
        while paths.answers(info.socket) and time.monotonic() < end:  # its last thread is still ending
            await asyncio.sleep(0.05)
        with contextlib.suppress(OSError):
            paths.remove_stale(info.socket)
    return True, paths.died_message(conn.pid, conn.hello.loop.log)
