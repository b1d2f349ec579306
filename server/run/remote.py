"""One run on a node of a cluster, from plain data: what a Ray task (ray_launcher.py) does on its worker.

`RemoteJob` is what travels: the driver's `RunRequest`, its allow-listed environment (env.py: nothing
else of the driver's environment, so no secret travels), the sandbox mode and spec, and the caps. The
commit's files come beside it as bytes (path -> content, read from the slot's worktree by the driver,
shipped through the object store). `run_job` writes them to a temporary folder of its own on this node,
builds the local launcher the settings would build (sandbox.py: bubblewrap where it runs), runs the
request there with this node's data cache (the runner prepares it when missing, under prepare.py's own
per-node lock) and the judge, checks that no shipped file changed during the run (the driver's own
check looks at its worktree, which a remote run never touches), and returns a `RemoteOutcome`: the
`RunResult`, the log (already capped by the runner) and the events file (capped here), and where it
ran. The folder is removed afterwards; one left by a worker that died (with its node, or by a forced
cancel) is swept by the node's next run (`sweep`: a live run holds a lock on its folder). `Placement`
names the node; it is the task's first message.
Must not import: ray, git, torch, the ledger, the loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from nightlab.server.core.types import Progress, RunResult, RunStatus
from nightlab.server.run.env import build_env
from nightlab.server.run.launcher import RunRequest
from nightlab.server.run.sandbox import SandboxSpec, make_launcher

SKIPPED = (".git", "__pycache__")  # never shipped: git's own files (a worktree's .git is a file), bytecode
FILES_MAX_BYTES = 256 << 20  # a workdir larger than this is not an experiment's files: refused, said why


@dataclass(frozen=True)
class Placement:
    """Where a remote run landed: the first thing its task says."""

    node_id: str
    node_ip: str
    hostname: str
    pid: int  # the Ray worker's process


@dataclass(frozen=True)
class RemoteJob:
    request: RunRequest  # the driver's: its paths are the driver's, rewritten on the node
    env: dict[str, str]  # the driver's environment through the allow-list (env.py)
    sandbox: str = "auto"  # [run] sandbox
    spec: SandboxSpec = field(default_factory=lambda: SandboxSpec(hide=()))
    log_max_bytes: int = 64 << 20  # [run] log_max_mb
    kill_grace_s: float = 3.0


@dataclass
class RemoteOutcome:
    result: RunResult
    log: bytes = b""
    events: bytes = b""
    notes: list[str] = field(default_factory=list)  # what the node's launcher said (a sandbox it lacks)


def allowed_env(parent: Mapping[str, str]) -> dict[str, str]:
    """The part of `parent` a training may see (env.py's allow-list and credential scan), without the
    runner's own NIGHTLAB_* variables, which the node's runner sets for each run."""
    env = build_env(parent, events_path=None, seed=0)
    for name in ("NIGHTLAB_SEED", "PYTHONUNBUFFERED"):
        env.pop(name, None)
    return env


def read_files(workdir: Path, max_bytes: int = FILES_MAX_BYTES) -> dict[str, bytes]:
    """The workdir's files (the experiment's commit, checked out), path -> bytes; links are skipped."""
    out: dict[str, bytes] = {}
    total = 0
    for root, dirs, names in os.walk(workdir):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED)
        for name in sorted(names):
            path = Path(root) / name
            if name in SKIPPED or path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise ValueError(f"{workdir} holds more than {max_bytes >> 20} MB: too much to ship to a node")
            out[path.relative_to(workdir).as_posix()] = data
    return out


def write_files(folder: Path, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        path = (folder / rel).resolve()
        if folder.resolve() not in path.parents:  # a name with .. in it is not one of the commit's
            raise ValueError(f"refusing to write {rel!r} outside the run's folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _stamps(folder: Path, files: Mapping[str, bytes]) -> dict[str, tuple[int, ...] | None]:
    out: dict[str, tuple[int, ...] | None] = {}
    for rel in files:
        try:
            st = os.stat(folder / rel)
        except OSError:
            out[rel] = None
            continue
        out[rel] = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    return out


def changed_files(folder: Path, files: Mapping[str, bytes], before: Mapping[str, tuple[int, ...] | None]) -> list[str]:
    """The shipped files the run changed: their bytes, or their inode and times (written, then restored)."""
    out = []
    after = _stamps(folder, files)
    for rel, data in files.items():
        try:
            now = (folder / rel).read_bytes()
        except OSError:
            out.append(f"{rel} (removed)")
            continue
        if now != data:
            out.append(rel)
        elif before.get(rel) != after.get(rel):
            out.append(f"{rel} (written during the run, then restored)")
    return out


def cap_tail(data: bytes, max_bytes: int) -> bytes:
    """An events file within `max_bytes`: its first and last lines, whole, around a marker."""
    if len(data) <= max_bytes:
        return data
    half = max_bytes // 2
    head = data[:half].rsplit(b"\n", 1)[0] + b"\n"
    tail = data[-half:].split(b"\n", 1)[-1]
    marker = b'{"event": "cut", "bytes": %d}\n' % (len(data) - len(head) - len(tail))
    return head + marker + tail


def node_scratch() -> Path:
    """This node's own folder for runs: under its temporary directory, one per user."""
    folder = Path(tempfile.gettempdir()) / f"nightlab-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


async def run_job(
    job: RemoteJob,
    files: Mapping[str, bytes],
    on_progress: Callable[[Progress], None],
    cancel: asyncio.Event,
    where: str = "",
) -> RemoteOutcome:
    """The job on this node (see the module's docstring). `where` names the node in messages."""
    notes: list[str] = []
    await asyncio.to_thread(sweep, node_scratch())
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=node_scratch()))
    held = _hold(folder)  # while this run lives: a sweep by another run on this node leaves it alone
    try:
        checkout, run_dir = folder / "checkout", folder / "run"
        checkout.mkdir()
        write_files(checkout, files)
        r = replace(
            job.request,
            workdir=checkout,
            log_path=run_dir / "run.log",
            events_path=run_dir / "events.jsonl",
            cuda_visible_devices=None,  # the node's own: Ray sets CUDA_VISIBLE_DEVICES for a task with GPUs
        )
        parent = dict(job.env)
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            parent["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            parent.pop("CUDA_VISIBLE_DEVICES", None)
        spec = replace(job.spec, compile_cache=node_scratch() / "compile")
        launcher = make_launcher(
            job.sandbox,
            spec,
            notes.append,
            parent_env=parent,
            log_max_bytes=job.log_max_bytes,
            kill_grace_s=job.kill_grace_s,
        )
        before = _stamps(checkout, files)
        result = await launcher.launch(r, on_progress, cancel)
        changed = changed_files(checkout, files, before)
        if changed and result.status == RunStatus.OK:
            result = replace(
                result,
                status=RunStatus.CRASH,
                error=f"invalid: file(s) of the commit changed during the run{where}: {', '.join(changed)}",
            )
        log = r.log_path.read_bytes() if r.log_path.exists() else b""
        events = r.events_path.read_bytes() if r.events_path.exists() else b""
        return RemoteOutcome(result, log, cap_tail(events, job.log_max_bytes), notes)
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
        os.close(held)


_LOCK = ".held"


def _hold(folder: Path) -> int:
    fd = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def sweep(scratch: Path) -> list[str]:
    """Removes the run folders of this node's scratch whose run is gone (a worker killed with its node,
    or by a forced cancel, never removed its own): those whose lock nobody holds."""
    gone = []
    for folder in scratch.glob("run-*"):
        try:
            fd = os.open(folder / _LOCK, os.O_RDWR)
        except FileNotFoundError:  # being made right now, or from before locks: old enough to go?
            if time.time() - folder.stat().st_mtime < 600:
                continue
            fd = None
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run holds it
        finally:
            if fd is not None:
                os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        gone.append(folder.name)
    return gone


class Threaded:
    """`run_job` on an event loop of its own, in a thread: a Ray task's main thread stays free to hand
    progress back (and to receive ray.cancel's KeyboardInterrupt). `cancel()` ends the run from any
    thread; the runner kills its process group."""

    def __init__(self, job: RemoteJob, files: Mapping[str, bytes], emit: Callable[[object], None], where: str):
        self.job, self.files, self.emit, self.where = job, files, emit, where
        self.loop: asyncio.AbstractEventLoop | None = None
        self.event: asyncio.Event | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._main, name="nightlab-remote-run", daemon=True)

    def start(self) -> None:
        self.thread.start()
        self.ready.wait()

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self.loop, self.event = asyncio.get_running_loop(), asyncio.Event()
        self.ready.set()
        try:
            outcome = await run_job(self.job, self.files, self.emit, self.event, self.where)
        except Exception as exc:  # a failed run is a result: Nightlab's own failure on this node, said so
            error = f"the run failed on {self.where.removeprefix(' on ') or 'its node'}: {type(exc).__name__}: {exc}"
            outcome = RemoteOutcome(RunResult(RunStatus.CRASH, error=error))
        self.emit(outcome)

    def cancel(self) -> None:
        if self.loop is not None and self.event is not None:
            self.loop.call_soon_threadsafe(self.event.set)


def hostname() -> str:
    return socket.gethostname()
