"""Process groups of training runs: whether one is alive, killing it with a grace period, the pgid
file a run leaves so that a later start can kill an orphan of a dead loop, the sweep for what escaped
a run's group (setsid daemons), and the compile check done before a run.
Must not import: anything of nightlab.server but core.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """Kill every process a dead Nightlab left running from `run_dir`: the groups in the pgid files of its
    full run, its smoke run and its repeats (`smoke/`, `repeat-<k>/`), but only where that process still
    runs inside `cwd_prefix` (a recycled pid belongs to someone else); and any process whose environment
    holds one of the run's NIGHTLAB_EVENTS paths (a run killed before its pgid file was written, a helper
    that left the group). True if any was killed."""
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
    return _kill_by_events(Path(run_dir)) or killed


def _kill_by_events(run_dir: Path) -> bool:
    """SIGKILL each process whose NIGHTLAB_EVENTS lies under `run_dir` (its runs' environment)."""
    proc, mark, killed = Path("/proc"), f"NIGHTLAB_EVENTS={run_dir}/".encode(), False
    if not proc.is_dir():
        return False
    for entry in proc.iterdir():
        env = _environ(entry.name) if entry.name.isdigit() and int(entry.name) != os.getpid() else None
        if env and any(v.startswith(mark) for v in env.split(b"\0")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed = True
    return killed


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (Linux's PR_SET_CHILD_SUBREAPER): a
    training's double-forked daemon is then re-parented to the loop, not to init, where `sweep_escaped`
    finds it even when it emptied its environment. A no-op elsewhere, and idempotent."""
    if _PRCTL is not None:
        _PRCTL(36, 1)  # PR_SET_CHILD_SUBREAPER


def _environ(pid: str) -> bytes | None:
    try:
        return (Path("/proc") / pid / "environ").read_bytes()
    except OSError:
        return None


def _ppid(pid: str) -> int | None:
    try:
        stat = (Path("/proc") / pid / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # state, ppid, ...
    return int(fields[1]) if len(fields) > 1 and fields[0] not in ("Z", "X") else None


def _cmdline(pid: str) -> str:
    try:
        return (Path("/proc") / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def sweep_escaped(events_path: Path) -> list[str]:
    """Kill what a finished run left running outside its process group (`setsid` daemons, double forks:
    killpg does not reach them) and say what: each as "pid: command line". A process is the run's when
    its environment holds the run's own NIGHTLAB_EVENTS path, or when it was re-parented to this loop
    (`become_subreaper`) with its environment emptied, which only an escape does. Needs /proc (Linux);
    elsewhere nothing is found. Under the sandbox the run's pid namespace has already taken them all."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    mark, me, killed = f"NIGHTLAB_EVENTS={events_path}".encode(), os.getpid(), []
    for entry in proc.iterdir():
        pid = entry.name
        if not pid.isdigit() or int(pid) == me:
            continue
        env = _environ(pid)
        ours = env is not None and mark in env.split(b"\0")
        if not ours and not (env == b"" and _ppid(pid) == me):
            continue
        what, adopted = f"{pid}: {_cmdline(pid)[:200]}", _ppid(pid) == me
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(what)
        if adopted:  # ours to reap now, or it stays a zombie of the loop's
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(pid), 0)
    return killed


def note_escaped(log_path: Path, escaped: list[str]) -> None:
    """Say in the run's log what `sweep_escaped` killed."""
    if escaped:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"\nnightlab: killed {len(escaped)} process(es) the run left running: {'; '.join(escaped)}\n")


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
