"""Where a tag's loop process can be reached, and whether it still lives.

The loop serves a Unix socket at `.nightlab/<tag>/loop.sock`; where that path is too long for a socket
(108 bytes on Linux, with its terminating NUL) it serves one under $XDG_RUNTIME_DIR/nightlab/ or
/tmp/nightlab-<uid>/ (a folder only its owner may enter), named by a hash of the ledger folder.
Either way `.nightlab/<tag>/loop.json` says where (pid, socket, log): written when the loop starts
serving, removed when it ends cleanly. A loop.json whose pid no longer holds the tag's lock means the
loop died without stopping (kill -9, a crash of the interpreter, a second Ctrl-C).

Must not import: the engine, rich, typer, pygls, lsprotocol.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nightlab.server.record.lock import loop_owner

SOCKET_NAME = "loop.sock"
INFO_NAME = "loop.json"
LOG_NAME = "loop.log"
SUN_PATH_MAX = 107  # bytes of sockaddr_un.sun_path, less the terminating NUL


class NoLoop(Exception):
    """No loop process serves this tag (the message says whether one died, with its log's last lines)."""

    def __init__(self, message: str, pid: int | None = None, died: bool = False):
        super().__init__(message)
        self.pid, self.died = pid, died


def socket_path(ledger_dir: Path) -> Path:
    """The socket a loop on `ledger_dir` serves: in the folder itself when the path fits, else a short one."""
    own = Path(os.path.abspath(ledger_dir)) / SOCKET_NAME
    if len(os.fsencode(own)) <= SUN_PATH_MAX:
        return own
    digest = hashlib.sha256(os.fsencode(own.parent)).hexdigest()[:16]
    return _private_dir() / f"{digest}.sock"


def _private_dir() -> Path:
    """A folder only this user may enter, for the sockets whose own path is too long."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "nightlab" if runtime and os.path.isdir(runtime) else None
    if base is None:
        base = Path(tempfile.gettempdir()) / f"nightlab-{os.getuid()}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = base.lstat()
    if info.st_uid != os.getuid() or (info.st_mode & 0o077) or base.is_symlink():  # another user's trap
        raise OSError(f"{base} is not a private folder of this user (owner {info.st_uid}, mode {info.st_mode:o})")
    return base


@dataclass
class LoopInfo:
    """What loop.json says: the loop process, its socket and its log (detached loops only)."""

    pid: int
    socket: str
    log: str | None = None


def write_info(ledger_dir: Path, info: LoopInfo) -> None:
    path = Path(ledger_dir) / INFO_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": info.pid, "socket": info.socket, "log": info.log}), encoding="utf-8")
    os.replace(tmp, path)  # a reader never sees half a file


def read_info(ledger_dir: Path) -> LoopInfo | None:
    try:
        data = json.loads((Path(ledger_dir) / INFO_NAME).read_text(encoding="utf-8"))
        return LoopInfo(int(data["pid"]), str(data["socket"]), data.get("log") or None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_info(ledger_dir: Path, pid: int) -> None:
    """Remove loop.json when it is this pid's (a newer loop's stays)."""
    info = read_info(ledger_dir)
    if info is not None and info.pid == pid:
        (Path(ledger_dir) / INFO_NAME).unlink(missing_ok=True)


def answers(path: str | Path, timeout: float = 2.0) -> bool:
    """Whether something accepts connections on the socket `path`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(os.fspath(path))
            return True
        except OSError:  # refused (stale), missing, or not a socket
            return False


def remove_stale(path: str | Path) -> bool:
    """Remove a socket file nothing answers on (its loop was killed); True when one was removed."""
    p = Path(path)
    if p.is_socket() and not answers(p):
        p.unlink(missing_ok=True)
        return True
    return False


def log_tail(path: str | Path | None, lines: int = 5, max_bytes: int = 16384) -> list[str]:
    """The last lines of a log (read from its end: a log may be large)."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def died_message(pid: int, log: str | None) -> str:
    tail = log_tail(log)
    where = f" (last lines of {Path(log).name}: " + " | ".join(tail) + ")" if tail and log else ""
    return f"the loop (pid {pid}) is not running; it died without stopping{where}"


def find_loop(ledger_dir: Path, tag: str = "") -> LoopInfo:
    """The loop serving `ledger_dir`, or NoLoop saying why there is none: never one, or one that died (its
    stale socket is removed then; loop.json stays, so that every command says it died, until the next run)."""
    ledger_dir = Path(ledger_dir)
    info = read_info(ledger_dir)
    owner = loop_owner(ledger_dir)
    if info is not None and answers(info.socket):
        return info
    on = f" on tag {tag}" if tag else ""
    if info is not None and owner is None:
        remove_stale(info.socket)
        raise NoLoop(died_message(info.pid, info.log), info.pid, died=True)
    if owner:  # the lock is held but nothing serves: a loop of a version without the endpoint, or starting
        raise NoLoop(f"the loop{on} (pid {owner}) does not answer on its control socket", owner)
    raise NoLoop(f"no loop is running{on}; start one with: nightlab run --detach")
