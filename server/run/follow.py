"""Follows files that grow while another process writes them: a training run's log and events file,
autoresearch's results.tsv and run.log.

`FileTail` reads the complete lines added since the last call (and notices truncation or replacement),
in bounded chunks, with `LineSplitter` dropping a line too long to hold; `read_tail` reads the end of a
file, `Watch` calls back when watchdog (inotify) sees a change; callers poll as well, since inotify may
miss events or be unavailable. Shared by `runner.py`, `logcap.py` and `monitor.py`.
Must not import: git, torch, anthropic, agents, or any other nightlab.server module.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


MAX_LINE = 1 << 20  # a longer line is dropped: no reader here needs it, and it must not be held whole
_CHUNK = 1 << 20


class LineSplitter:
    """Bytes in, complete lines out, holding at most `max_line` bytes of a partial line: a line that
    grows past it is dropped (up to its end), so a runaway line costs no memory. `dropped` counts them.
    `split_cr` also ends a line at "\\r", for step lines rewritten in place."""

    def __init__(self, *, split_cr: bool = False, max_line: int = MAX_LINE):
        self.split_cr = split_cr
        self.max_line = max_line
        self.dropped = 0
        self._partial = b""
        self._skipping = False  # inside a dropped line: discard up to its end

    def reset(self) -> None:
        self._partial, self._skipping = b"", False

    def pending(self) -> str:
        """The partial line held back (a last line with no line break yet)."""
        return self._partial.decode("utf-8", errors="replace")

    def feed(self, data: bytes) -> list[str]:
        if self.split_cr:
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *complete, rest = (self._partial + data).split(b"\n")
        if self._skipping and complete:  # the first piece ends the line being dropped
            complete, self._skipping = complete[1:], False
        self._partial = b"" if self._skipping else rest
        if len(self._partial) > self.max_line:
            self._partial, self._skipping = b"", True
            self.dropped += 1
        kept = [line for line in complete if len(line) <= self.max_line]
        self.dropped += len(complete) - len(kept)
        return [line.decode("utf-8", errors="replace") for line in kept]


class FileTail:
    """Reads the complete lines added to a file since the last call (offset kept, partial line held back).

    `split_cr` also ends a line at "\\r", for step lines rewritten in place. A file that shrinks or is
    replaced is read again from the start, and `generation` goes up so a reader can tell. Reads go in
    chunks and a line longer than `max_line` is dropped, so a runaway writer cannot fill our memory;
    `max_bytes` bounds one call (the rest comes on the next).
    """

    def __init__(self, path: Path, *, split_cr: bool = False, max_line: int = MAX_LINE):
        self.path = Path(path)
        self.split_cr = split_cr
        self.generation = 0
        self._offset = 0
        self._inode: int | None = None
        self._lines = LineSplitter(split_cr=split_cr, max_line=max_line)
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self._inode is not None or self.path.exists()

    def pending(self) -> str:
        """The last line read so far when it has no line break yet (a finished file's last line)."""
        with self._lock:
            return self._lines.pending()

    def read_lines(self, max_bytes: int | None = None) -> list[str]:
        """The complete lines added since the last call (at most `max_bytes` read, when given)."""
        with self._lock:
            lines: list[str] = []
            try:
                with open(self.path, "rb") as handle:
                    stat = os.fstat(handle.fileno())
                    if self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset):
                        self._offset = 0
                        self._lines.reset()
                        self.generation += 1
                    self._inode = stat.st_ino
                    handle.seek(self._offset)
                    budget = stat.st_size - self._offset if max_bytes is None else max_bytes
                    while budget > 0 and (data := handle.read(min(_CHUNK, budget))):
                        self._offset += len(data)
                        budget -= len(data)
                        lines += self._lines.feed(data)
            except OSError:  # not created yet, or removed between two polls
                pass
            return lines


def read_tail(path: Path, max_bytes: int) -> str:
    """The last `max_bytes` of a file as text ("" when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _drop_stop_race(record: logging.LogRecord) -> bool:
    # watchdog 7 logs this as an error when an observer is stopped while an event is in flight; it is
    # harmless (the event is dropped and we poll once more after stopping) and would fill the CLI's log.
    return "called when the thread is inactive" not in str(record.msg)


class Watch:
    """Calls `on_change` (on watchdog's thread) when one of `paths` changes; a no-op if inotify fails."""

    def __init__(self, paths: set[Path], on_change: Callable[[], None]):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        inotify_log = logging.getLogger("watchdog.observers.inotify")
        if _drop_stop_race not in inotify_log.filters:
            inotify_log.addFilter(_drop_stop_race)

        names = {os.path.abspath(p) for p in paths}

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                # Only changes: our own reads raise "opened"/"closed_no_write" events, and reacting to
                # those would read again, which raises them again: a busy loop that starves the training.
                if event.event_type not in ("modified", "created", "moved", "deleted", "closed"):
                    return
                touched = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
                if touched & names:
                    try:
                        on_change()
                    except Exception:  # the polling fallback still runs; keep the observer alive
                        log.exception("following %s failed", sorted(names))

        self._observer: Any | None = Observer()  # watchdog's Observer (imported lazily)
        try:
            for folder in {os.path.dirname(name) for name in names}:
                self._observer.schedule(Handler(), folder, recursive=False)
            self._observer.start()
        except OSError as exc:  # e.g. out of inotify instances: polling alone will do
            log.warning("watchdog unavailable (%s); polling only", exc)
            self._observer = None

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5.0)
            self._observer = None
