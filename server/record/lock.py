"""The per-tag loop lock: two `nightlab run` on the same tag would corrupt each other's branch.

Must not import: git, torch, the engine.
"""

from __future__ import annotations

import os
from pathlib import Path


class EngineBusy(Exception):
    """Another loop holds this tag's lock."""


LOCK_NAME = "loop.lock"


def acquire(folder: Path):
    """An exclusive lock on the tag's ledger folder for the life of the process (the kernel drops it
    when the process dies, kill -9 included). Returns the open file, or raises EngineBusy."""
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK_NAME, "a+")
    try:
        import fcntl

        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no lock
        return f
    except OSError:
        f.close()
        raise EngineBusy(
            f"another nightlab loop (pid {loop_owner(folder) or '?'}) is running on {folder}; "
            "stop it first or use another --tag"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


def loop_owner(folder: Path) -> int | None:
    """The pid of the loop running on this ledger folder, or None."""
    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return None
    try:
        import fcntl

        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(f, fcntl.LOCK_UN)
            return None
    except ImportError:
        return None
