"""Process groups of training runs: whether one is alive, killing it with a grace period, the pgid
file a run leaves so that a later start can kill an orphan of a dead loop, and the compile check done
before a run.
Must not import: anything of nightlab.server but core.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path


# --------------------------------------------------------------------------- compile check
def compile_check(workspace: Path, files: list[str]) -> str | None:
    """Syntax errors of the edited Python files as `file:line:col: message` lines; None when all compile.

    Compiles in memory (what py_compile does, without writing a .pyc into the worktree).
    """
    errors = []
    for name in files:
        if not name.endswith(".py"):
            continue
        path = Path(workspace) / name
        try:
            source = path.read_bytes()
            compile(source, name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            line = (exc.text or "").rstrip("\n")
            where = f"{name}:{exc.lineno}:{exc.offset or 0}"
            errors.append(f"{where}: {type(exc).__name__}: {exc.msg}" + (f"\n    {line.strip()}" if line else ""))
        except (OSError, ValueError) as exc:  # missing file, null bytes, bad encoding
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return "\n".join(errors) or None


# --------------------------------------------------------------------------- process groups
def group_alive(pgid: int) -> bool:
    """Whether any live process is in group `pgid`. Zombies do not count: nobody may reap them here."""
    try:
        os.killpg(pgid, 0)  # cheap, and the usual answer: the group is gone
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():  # macOS: no way to tell zombies apart; the caller's timeouts bound the wait
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()  # state, ppid, pgrp, ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


PID_FILE = "pgid"


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in the forked child
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent() -> None:
    """In the child, before exec: the kernel sends it SIGKILL when the loop's process dies (Linux's
    PR_SET_PDEATHSIG), so a kill -9 of the loop takes its training along. A no-op elsewhere."""
    if _PRCTL is not None:
        _PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


def kill_orphan(run_dir: Path, cwd_prefix: Path) -> bool:
    """Kill every process group a dead Nightlab left running from `run_dir`: the pgid files of its full
    run, its smoke run and its repeats (`smoke/`, `repeat-<k>/`), but only where that process still runs
    inside `cwd_prefix` (a recycled pid belongs to someone else). True if any was killed."""
    killed = False
    for pid_file in sorted(Path(run_dir).glob(f"**/{PID_FILE}")):
        try:
            pgid = int(pid_file.read_text().strip())
            cwd = os.readlink(f"/proc/{pgid}/cwd")
        except (OSError, ValueError):
            continue
        if not cwd.startswith(str(cwd_prefix)):
            continue
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed = True
        except (ProcessLookupError, PermissionError):
            continue
    return killed


async def kill_group(pgid: int, grace_s: float) -> None:
    """SIGTERM the whole group, wait up to `grace_s` for it to go, then SIGKILL what is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            await asyncio.sleep(0.05)
