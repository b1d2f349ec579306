"""Durable appends for the ledger's files: one complete line per append, fsync'ed, a torn last line
(a kill -9) closed before the next, a partial line (a full disk) taken back out; and the lock that makes
the ledger's writers (the loop, the editor recording a review) take turns.

Must not import: anything of nightlab.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

_write = os.write  # the one call that puts a line's bytes on disk (tests make it fail as a full disk does)
LOCK_WAIT_S = 10.0  # another writer holds the append lock this long at most (training could hold it forever)


def fsync_dir(path: Path) -> None:
    # A new file's directory entry is only durable once the directory is synced too.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def append_line(path: Path, line: str, header: str = "") -> None:
    """Append one complete line durably. If the file ends in a torn line, start a new one first."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        if size == 0:
            prefix = header.encode("utf-8")
        else:
            with open(path, "rb") as r:
                r.seek(size - 1)
                if r.read(1) != b"\n":
                    prefix = b"\n"
        data = prefix + line.encode("utf-8")
        try:
            while data:
                data = data[_write(fd, data) :]
            os.fsync(fd)
        except OSError:  # a full disk mid-line: take the partial line back out, so nothing half
            os.ftruncate(fd, size)  # written is ever read (shrinking needs no space); the caller retries
            raise
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


@contextmanager
def append_lock(folder: Path) -> Iterator[None]:
    """Writers (the loop, the editor recording a review) take turns: each seal's number follows the last.
    Not forever: with the sandbox off training could hold the lock; then the append goes ahead."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        yield
        return
    fd = os.open(folder / "append.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    log.warning("%s: the append lock is held elsewhere; appending without it", folder)
                    break
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)
