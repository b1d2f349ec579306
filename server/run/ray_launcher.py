"""Runs on a Ray cluster: the `Launcher` (launcher.py) whose runs are Ray tasks (`[run] executor = "ray"`).

Each run is one task asking for the run's resources (1 GPU where the cluster has GPUs, else 1 CPU;
`num_gpus`, `num_cpus` and custom `resources` when given). The commit's files travel as bytes through
the object store (`ray.put`), never as a shared path; on its node the task writes them to a folder of
its own and runs the same local launcher the settings would build here, sandbox, data cache and judge
included (remote.py). The task is a streaming generator: its first item says where it landed
(`Placement`), then the run's `Progress` while it trains, then the `RemoteOutcome` (result, log,
events). A generator rather than an actor and a queue: progress needs no second object to manage, a
run is one cancellable unit (`ray.cancel` ends it; its handler on the node ends the training's process
group), and a dead node fails exactly the runs that were on it. The driver writes the log and events
to the request's paths and `placement.json` (the node) beside them.

A run waits in Ray's queue while no node has its resources: a node that joins takes it at once, and the
deadline counts from the run's start on its node; one that waits long is said to (`waiting`: what it
asks for, what is free). Progress is also appended to the driver's events file as it comes. Stop, cancel
and the deadline: `ray.cancel`, then with force when the task has not ended in the grace time. A node or
worker that dies mid-run: the result is interrupted, its error starting with `LOST` and naming the node
and Ray's reason (loop/launch.py's `rerun_lost` runs it again); Ray's own retries are off
(`max_retries=0`), so a run is never trained twice behind the loop's back. The driver connects once per
process (`ray.init(address)`, not Ray Client: the loop runs on a node of the cluster).
Must not import: git, torch, the ledger, the loop. Only run/ imports ray (tests/test_layers.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from nightlab.server.core.types import Progress, RunResult, RunStatus
from nightlab.server.run.launcher import ProgressCallback, RunRequest, safe_progress
from nightlab.server.run.remote import Placement, RemoteJob, RemoteOutcome, Threaded, allowed_env, hostname, read_files
from nightlab.server.run.sandbox import SandboxSpec

log = logging.getLogger(__name__)
LOST = "node lost"  # how an interrupted result's error starts when its node or worker died
PLACEMENT_FILE = "placement.json"
PREPARE_ALLOWANCE_S = 900.0  # a fresh node builds its data cache before the run's clock starts
PENDING_NOTICE_S = 120.0  # a run not placed after this long is said to wait (resources no node has?)
# What a dead node or worker looks like from the driver.
_LOST_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(ray.exceptions, name)
    for name in (
        "NodeDiedError",
        "WorkerCrashedError",
        "LocalRayletDiedError",
        "ObjectLostError",
        "OwnerDiedError",
        "RaySystemError",
        "ActorDiedError",
    )
    if hasattr(ray.exceptions, name)
)
_connect_lock = threading.Lock()
_joined: str | None = None  # the address this process joined with (a Ray driver joins one cluster)


def connect(address: str) -> None:
    """Joins the cluster at `address` ("auto": the one this machine is a node of) once per process."""
    global _joined
    with _connect_lock:
        if ray.is_initialized():  # by an earlier run, or by the program that embeds the loop
            if _joined is not None and (address or "auto") != _joined:
                raise RuntimeError(f"this process has joined the cluster at {_joined!r} already, not {address!r}")
            return
        if address and address != "auto":  # ray.init retries an address where nothing answers for minutes
            host, port = address.rsplit(":", 1)
            try:
                socket.create_connection((host, int(port)), timeout=10).close()
            except (OSError, ValueError) as exc:
                raise ConnectionError(f"nothing answers at {address} ({exc}); is the cluster's head up?") from None
        ray.init(
            address=address or "auto",
            log_to_driver=False,  # the runs' output comes back in their results, capped
            logging_level=logging.WARNING,
            configure_logging=False,
        )
        _joined = address or "auto"


# --------------------------------------------------------------------------- on the node
def _task(job: RemoteJob, files: Mapping[str, bytes]):
    """The Ray task (a streaming generator): where it runs, the run's progress, then its outcome."""
    ctx = ray.get_runtime_context()
    here = Placement(ctx.get_node_id(), ray.util.get_node_ip_address(), hostname(), os.getpid())
    yield here
    items: queue.Queue = queue.Queue()
    run = Threaded(job, files, items.put, f" on node {here.node_ip} ({here.node_id[:12]})")
    run.start()
    try:
        while True:
            item = _get(items)
            while not isinstance(item, RemoteOutcome):  # a flood of steps: only the latest is sent
                try:
                    newer = items.get_nowait()
                except queue.Empty:
                    break
                if isinstance(newer, RemoteOutcome):
                    yield item
                item = newer
            yield item
            if isinstance(item, RemoteOutcome):
                return
    except BaseException:  # ray.cancel raises KeyboardInterrupt here: the run's process group ends first
        run.cancel()
        run.thread.join(job.kill_grace_s + 20.0)
        raise


def _get(items: queue.Queue) -> object:
    """The next item; waits in short slices, so that ray.cancel's KeyboardInterrupt (raised between two
    bytecodes of this thread) is not held up by a wait in C."""
    while True:
        try:
            return items.get(timeout=0.1)
        except queue.Empty:
            continue


_remote: Any = None


def remote_task() -> Any:
    global _remote
    if _remote is None:
        _remote = ray.remote(num_returns="streaming", max_retries=0)(_task)
    return _remote


# --------------------------------------------------------------------------- on the driver
@dataclass
class RayLauncher:
    """Runs requests as Ray tasks (see the module's docstring). Holds settings only: several slots share one."""

    address: str = "auto"
    sandbox: str = "auto"  # the nodes' launcher: [run] sandbox
    spec: SandboxSpec = field(default_factory=lambda: SandboxSpec(hide=()))
    num_cpus: float | None = None  # None, and no GPU asked for: 1
    num_gpus: float | None = None  # None: 1 where the cluster has GPUs, else 0
    resources: dict[str, float] = field(default_factory=dict)  # custom resources (a hardware class)
    log_max_bytes: int = 64 << 20
    kill_grace_s: float = 3.0
    parent_env: Mapping[str, str] | None = None  # None: os.environ at each run (through the allow-list)
    warn: Callable[[str], None] = lambda text: None
    _said: set[str] = field(default_factory=set)

    def options(self) -> dict[str, Any]:
        """The task's resource request."""
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        cpus = self.num_cpus if self.num_cpus is not None else (0.0 if gpus else 1.0)
        return {"num_cpus": cpus, "num_gpus": gpus, "resources": dict(self.resources)}

    def capacity(self) -> int:
        """How many runs of this launcher's request the cluster's live nodes hold at once (blocking): the
        elastic slots' measure (loop/elastic.py)."""
        connect(self.address)
        o = self.options()
        want = {k: float(v) for k, v in {"CPU": o["num_cpus"], "GPU": o["num_gpus"], **o["resources"]}.items() if v}
        return sum(
            min((int(float((n.get("Resources") or {}).get(k, 0.0)) // v) for k, v in want.items()), default=1)
            for n in ray.nodes()
            if n.get("Alive")
        )

    async def launch(
        self, request: RunRequest, on_progress: ProgressCallback | None = None, cancel: asyncio.Event | None = None
    ) -> RunResult:
        r, cancel = request, cancel or asyncio.Event()
        started = time.monotonic()
        if cancel.is_set():
            return RunResult(RunStatus.INTERRUPTED, error="cancelled before it started", log_path=str(r.log_path))
        try:
            files = await asyncio.to_thread(read_files, r.workdir)
        except (OSError, ValueError) as exc:
            return _ended(r, RunResult(RunStatus.CRASH, error=f"could not read the run's files: {exc}"))
        try:
            await asyncio.to_thread(connect, self.address)
            options = self.options()
            threads = int(options["num_cpus"]) if not options["num_gpus"] and options["num_cpus"] >= 1 else None
            env = allowed_env(os.environ if self.parent_env is None else self.parent_env)
            job = RemoteJob(replace(r, threads=threads), env, self.sandbox, self.spec, self.log_max_bytes)
            job = replace(job, kill_grace_s=self.kill_grace_s)
            gen = remote_task().options(**options).remote(job, ray.put(files))
        except Exception as exc:  # no cluster at the address, or one that refused the task
            error = f"cannot run on the Ray cluster at {self.address!r}: {type(exc).__name__}: {exc}"
            return _ended(r, RunResult(RunStatus.CRASH, error=error, total_s=time.monotonic() - started))
        placement, outcome = await _Follow(self, r, gen, on_progress, cancel).run()
        for note in outcome.notes:
            if note not in self._said:
                self._said.add(note)
                self.warn(note)
        return _ended(r, outcome.result, outcome, placement, time.monotonic() - started)

    def waiting(self, r: RunRequest) -> None:
        """Says (once per launcher) that a run waits for a node: what it asks for, what the cluster has."""
        if "waiting" in self._said:
            return
        self._said.add("waiting")
        try:
            have = {
                k: v for k, v in ray.available_resources().items() if not k.startswith(("node:", "memory", "object"))
            }
        except Exception:  # the cluster's view is only for the message
            have = {}
        self.warn(
            f"a run has waited {PENDING_NOTICE_S:.0f} s for a node of the Ray cluster with {self.options()}; free now: "
            f"{have or 'nothing'}. It starts when a node with those resources joins or frees up."
        )


def _where(placement: Placement | None) -> str:
    return f"node {placement.node_ip} ({placement.node_id[:12]})" if placement else "its node"


class _Follow:
    """One task followed from the driver: its placement, its progress, its end (see RayLauncher)."""

    def __init__(self, launcher: RayLauncher, r: RunRequest, gen, on_progress, cancel: asyncio.Event):
        self.launcher, self.r, self.gen, self.on_progress, self.cancel = launcher, r, gen, on_progress, cancel
        self.placement: Placement | None = None
        self.items: AsyncIterator = gen.__aiter__()

    async def _next(self) -> Any:
        ref = await self.items.__anext__()
        return await ref

    def _limit(self) -> float:
        judge = self.r.judge.deadline_s if self.r.judge is not None else 0.0
        return self.r.deadline_s + judge + PREPARE_ALLOWANCE_S + 60.0

    async def run(self) -> tuple[Placement | None, RemoteOutcome]:
        loop = asyncio.get_running_loop()
        cancelled = asyncio.ensure_future(self.cancel.wait())
        # Until it is placed: a notice when it waits long (no node has what it asks for); then the
        # driver's own deadline, a node that hangs.
        limit_at = loop.time() + PENDING_NOTICE_S
        nxt: asyncio.Future | None = None
        try:
            while True:
                nxt = nxt or asyncio.ensure_future(self._next())
                timeout = None if limit_at == float("inf") else max(0.0, limit_at - loop.time())
                await asyncio.wait([nxt, cancelled], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done() and not cancelled.done() and self.placement is None:
                    self.launcher.waiting(self.r)
                    limit_at = float("inf")
                    continue
                if not nxt.done():
                    return self.placement, await self._end(nxt, "cancelled" if cancelled.done() else "timeout")
                done, nxt = nxt, None
                try:
                    item = done.result()
                except StopAsyncIteration:
                    return self.placement, self._failed(RunStatus.CRASH, "its task ended without a result")
                except Exception as exc:
                    return self.placement, self._error(exc)
                if isinstance(item, Placement):
                    self.placement, limit_at = item, loop.time() + self._limit()
                    await asyncio.to_thread(_write_placement, self.r, item)
                elif isinstance(item, Progress):
                    await asyncio.to_thread(_append_step, self.r, item)
                    if self.on_progress is not None:
                        safe_progress(self.on_progress, item)
                elif isinstance(item, RemoteOutcome):
                    return self.placement, item
        finally:
            cancelled.cancel()

    async def _end(self, nxt: asyncio.Future, why: str) -> RemoteOutcome:
        """Cancel the task (its handler ends the training), with force if it does not end in time."""
        ray.cancel(self.gen)
        done, _ = await asyncio.wait([nxt], timeout=self.launcher.kill_grace_s + 25.0)
        if not done:
            ray.cancel(self.gen, force=True)
            await asyncio.wait([nxt], timeout=10.0)
        if not nxt.done():
            nxt.cancel()
        elif not nxt.cancelled() and nxt.exception() is None and isinstance(nxt.result(), RemoteOutcome):
            return nxt.result()  # it ended by itself meanwhile
        if why == "timeout":
            return self._failed(RunStatus.TIMEOUT, f"killed at the driver's deadline ({self._limit():.0f} s)")
        return self._failed(RunStatus.INTERRUPTED, self._cancelled())

    def _error(self, exc: BaseException) -> RemoteOutcome:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cause = getattr(exc, "cause", None)
        if isinstance(exc, ray.exceptions.TaskCancelledError) or isinstance(cause, ray.exceptions.TaskCancelledError):
            return self._failed(RunStatus.INTERRUPTED, self._cancelled())
        if isinstance(exc, _LOST_ERRORS) or isinstance(cause, _LOST_ERRORS):
            error = f"{LOST}: {_where(self.placement)} died during the run ({type(exc).__name__}: {text})"
            return self._failed(RunStatus.INTERRUPTED, error)
        return self._failed(RunStatus.CRASH, f"the run failed on {_where(self.placement)}: {exc}")

    def _cancelled(self) -> str:
        if self.placement is None:
            return "cancelled before it started (it waited for a node with its resources)"
        return f"cancelled on {_where(self.placement)}"

    def _failed(self, status: RunStatus, error: str) -> RemoteOutcome:
        return RemoteOutcome(RunResult(status, error=error), log=f"nightlab: {error}\n".encode())


def _write_placement(r: RunRequest, placement: Placement) -> None:
    r.log_path.parent.mkdir(parents=True, exist_ok=True)
    r.events_path.parent.mkdir(parents=True, exist_ok=True)
    r.events_path.unlink(missing_ok=True)  # an earlier run's: this one's steps are appended as they come
    data = {**asdict(placement), "placed_at": time.time()}
    (r.log_path.parent / PLACEMENT_FILE).write_text(json.dumps(data) + "\n")


def _append_step(r: RunRequest, p: Progress) -> None:
    """The step as an event line in the driver's events file while the run trains (what reads a local
    run's events file live reads this one too); the node's whole file replaces it at the end."""
    event = {"event": "step", **{k: v for k, v in asdict(p).items() if k != "fraction"}, "progress": p.fraction}
    with open(r.events_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


def _ended(
    r: RunRequest,
    result: RunResult,
    outcome: RemoteOutcome | None = None,
    placement: Placement | None = None,
    total_s: float | None = None,
) -> RunResult:
    """The result with the run's log and events written where the request asked."""
    r.log_path.parent.mkdir(parents=True, exist_ok=True)
    r.events_path.parent.mkdir(parents=True, exist_ok=True)
    r.log_path.write_bytes(outcome.log if outcome is not None else f"nightlab: {result.error}\n".encode())
    if outcome is not None and outcome.events:
        r.events_path.write_bytes(outcome.events)
    elif placement is None:  # never placed: nothing of this run's (a file there is an earlier run's)
        r.events_path.unlink(missing_ok=True)
    # else: a run lost or cancelled on its node keeps the steps that came while it trained
    result = replace(result, log_path=str(r.log_path))
    if total_s is not None and not result.total_s:
        result = replace(result, total_s=total_s)
    return result


def placement_of(run_dir: Path) -> dict | None:
    """Where a run folder's run took place (its placement.json), or None."""
    try:
        return json.loads((run_dir / PLACEMENT_FILE).read_text())
    except (OSError, ValueError):
        return None
