"""Follows files that grow while another process writes them: a training run's log and events file,
autoresearch's results.tsv and run.log.

`FileTail` reads the complete lines added since the last call (and notices truncation or replacement),
`read_tail` reads the end of a file, `Watch` calls back when watchdog (inotify) sees a change; callers
poll as well, since inotify may miss events or be unavailable. Shared by `runner.py` and `monitor.py`.
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


class FileTail:
    """Reads the complete lines added to a file since the last call (offset kept, partial line held back).

    `split_cr` also ends a line at "\\r", for step lines rewritten in place. A file that shrinks or is
    replaced is read again from the start, and `generation` goes up so a reader can tell.
    """

    def __init__(self, path: Path, *, split_cr: bool = False):
        self.path = Path(path)
        self.split_cr = split_cr
        self.generation = 0
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self._inode is not None or self.path.exists()

    def read_lines(self) -> list[str]:
        with self._lock:
            try:
                with open(self.path, "rb") as handle:
                    stat = os.fstat(handle.fileno())
                    if self._inode is not None and (stat.st_ino != self._inode or stat.st_size < self._offset):
                        self._offset, self._partial = 0, b""
                        self.generation += 1
                    self._inode = stat.st_ino
                    handle.seek(self._offset)
                    data = handle.read()
            except OSError:  # not created yet, or removed between two polls
                return []
            self._offset += len(data)
            data = self._partial + data
            if self.split_cr:
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            *complete, self._partial = data.split(b"\n")
            return [line.decode("utf-8", errors="replace") for line in complete]


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
