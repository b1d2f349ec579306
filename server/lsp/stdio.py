"""The language server's stdio loop: LSP's framing (`Content-Length` headers, then the body), read so
that a bad message costs only itself. A header line that is not one, a missing or malformed
`Content-Length`, binary noise or a body that is not JSON is logged and skipped, and the server reads on
(the next `Content-Length` found in the stream puts it back in step); a message larger than
`MAX_MESSAGE_BYTES` is refused before any of it is read, and lines are read in bounded pieces, so no
input can exhaust the server's memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # far above any real LSP message (a whole train.py is kilobytes)
MAX_LINE_BYTES = 64 * 1024
_LENGTH = re.compile(rb"Content-Length:[ \t]*(\d{1,20})[ \t]*\r?\n?$", re.IGNORECASE)


class Reader:
    """stdin, read on a worker thread, one bounded line or an exact count of bytes at a time."""

    def __init__(self, stream: BinaryIO, executor: ThreadPoolExecutor | None = None):
        self.stream, self.executor = stream, executor

    async def readline(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.readline, MAX_LINE_BYTES)

    async def readexactly(self, n: int) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.stream.read, n)


async def serve(reader: Reader, protocol: Any, stop: threading.Event) -> None:
    """Read messages and hand each to `protocol.handle_message` until the stream ends or `stop` is set."""
    length: int | None = None
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            return
        if length is None:
            length = _header_length(line)
            continue
        if line.strip():  # another header (Content-Type), or a new Content-Length: the last one wins
            again = _LENGTH.search(line)
            length = _header_length(line) if again else length
            continue
        body = await reader.readexactly(length)
        length = None
        if not body:
            return
        _handle(protocol, body)


def _header_length(line: bytes) -> int | None:
    match = _LENGTH.search(line)
    if match is None:
        if line.strip():
            log.warning("skipped input that is not an LSP header: %r", line[:80])
        return None
    length = int(match.group(1))
    if length > MAX_MESSAGE_BYTES:
        log.warning("refused a message of %d bytes (at most %d); reading on", length, MAX_MESSAGE_BYTES)
        return None
    return length


def _handle(protocol: Any, body: bytes) -> None:
    try:
        message = json.loads(body, object_hook=protocol.structure_message)
    except ValueError as exc:  # not JSON (or not UTF-8): that message alone is lost
        log.warning("skipped a message that is not JSON: %s", exc)
        return
    try:
        protocol.handle_message(message)
    except Exception:  # a handler's own failure is answered by pygls; this is a bug of ours
        log.exception("could not handle a message")
