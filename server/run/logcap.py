"""A run's output into its log, capped, and into the runner's follower, line by line, bounded.

The training's stdout and stderr go into a pipe rather than straight into run.log: `LogPump` reads it
on a thread in chunks of 64 KB, writes them to the log through `CappedLog` and hands the complete
lines (a line longer than `STEP_LINE_MAX` is dropped, never held: step lines are short) to the
runner's follower. Past the cap the log keeps its head (the first half of the cap: start-up, the
first steps, an early traceback) and its tail (at least the last quarter: the last steps, the summary
block, the final traceback), with one marker line between them that says how many bytes were cut.
The file never passes the cap by more than one chunk and the loop holds no more than a chunk and a
short line, so a 300 MB line costs neither memory nor disk. A log that cannot be written (a full
disk) stops growing, but the pipe is still drained, so the training never blocks on its output.
Must not import: git, torch, the ledger, the loop, or any nightlab.server module but follow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
from collections.abc import Callable
from pathlib import Path

from nightlab.server.run.follow import LineSplitter
from nightlab.server.run.processes import die_with_parent

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 << 20  # [run] log_max_mb's default
MIN_MAX_BYTES = 64 << 10  # room for a head, a marker and a tail that holds a summary block
STEP_LINE_MAX = 64 << 10
_CHUNK = 64 << 10


def marker(cut: int, max_bytes: int) -> bytes:
    """The line that stands where output was cut."""
    cap = f"{max_bytes / (1 << 20):g} MB"
    return (
        f"\n[nightlab: {cut:,} bytes of output cut here; the log keeps the head and the tail of a run's "
        f"output within its cap of {cap} ([run] log_max_mb)]\n"
    ).encode()


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class CappedLog:
    """A log file that keeps the first half of `max_bytes` and the latest output, the middle cut out.

    Written by this process only (the training writes into a pipe), so cutting the middle is safe: once
    the file passes the cap, the last quarter of the cap is copied down behind the head and the marker,
    and the file truncated there. The copying costs at most about as much as the writing.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES):
        self.path = Path(path)
        self.max_bytes = max(int(max_bytes), MIN_MAX_BYTES)
        self.head = self.max_bytes // 2
        self.keep = self.max_bytes // 4
        self.cut = 0  # bytes of output not in the file
        self.error: OSError | None = None  # the first write that failed; later output goes unlogged
        self._marker_len = 0
        self._size = 0
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def write(self, data: bytes) -> None:
        if self._fd is None or self.error is not None:
            self.cut += len(data)
            return
        try:
            _pwrite_all(self._fd, data, self._size)
            self._size += len(data)
            if self._size > self.max_bytes:
                self._cut_middle(self._fd)
        except OSError as exc:  # a full disk: the run goes on, its log stops here
            self.error = exc
            self.cut += len(data)
            log.warning("%s: cannot write the run's log (%s); the rest of its output is not kept", self.path, exc)

    def _cut_middle(self, fd: int) -> None:
        start = self._size - self.keep  # the tail that stays begins here
        self.cut += start - self.head - self._marker_len
        text = marker(self.cut, self.max_bytes)
        _pwrite_all(fd, text, self.head)
        self._marker_len = len(text)
        src, dst = start, self.head + len(text)  # dst < src: copying forward never reads what it wrote
        while src < self._size:
            chunk = os.pread(fd, min(1 << 20, self._size - src), src)
            if not chunk:
                break
            _pwrite_all(fd, chunk, dst)
            src, dst = src + len(chunk), dst + len(chunk)
        os.ftruncate(fd, dst)
        self._size = dst

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class LogPump:
    """Copies a pipe into a `CappedLog` on a thread and passes its lines to `on_lines` (from that
    thread). Owns both: it closes the pipe's read end and the log when it ends."""

    def __init__(self, read_fd: int, capped: CappedLog, on_lines: Callable[[list[str]], None]):
        self.log = capped
        self.on_lines = on_lines
        self._fd = read_fd
        self._lines = LineSplitter(split_cr=True, max_line=STEP_LINE_MAX)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nightlab-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._fd], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(self._fd, _CHUNK)
                if not data:  # every writer has closed it: the run and whatever it started are gone
                    break
                self.log.write(data)
                lines = self._lines.feed(data)
                if lines:
                    try:
                        self.on_lines(lines)
                    except Exception:  # a broken follower must not stop the log, nor block the training
                        log.exception("following %s failed", self.log.path)
        except OSError as exc:
            log.warning("reading the output of %s failed: %s", self.log.path, exc)
        finally:
            os.close(self._fd)
            self.log.close()

    def stop(self) -> None:
        """Stop reading soon (the thread closes the pipe, so a writer left behind gets EPIPE)."""
        self._stop.set()

    def finish(self, timeout: float) -> None:
        """Wait for the end of the output, at most `timeout` seconds (a process that escaped the run's
        group may hold the pipe open forever), then stop; the log is complete and closed on return."""
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join()


async def start_logged(
    argv: list[str], cwd: Path, env: dict[str, str], log: CappedLog, on_lines: Callable[[list[str]], None]
) -> tuple[asyncio.subprocess.Process, LogPump]:
    """`argv` in a session and process group of its own, its stdout and stderr through a pipe into `log`
    (its lines passed to `on_lines` from the pump's thread), SIGKILLed if the loop dies (Linux). The
    child holds the only write end, so its exit (and its children's) is the output's end."""
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    except BaseException:
        os.close(read_fd)
        log.close()
        raise
    finally:
        os.close(write_fd)
    pump = LogPump(read_fd, log, on_lines)
    pump.start()
    return proc, pump
