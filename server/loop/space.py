"""A full disk pauses the loop (issue 11, item 9), names the disk and the space it needs, and resumes by
itself once there is room; nothing is lost or half written meanwhile.

Before each experiment, and when a write fails with ENOSPC (the ledger's append, git's commit or amend),
`DiskGuard` checks the free space of every filesystem the loop writes: the ledger's folder, the runs
folder, the worktree and the repository (git's objects). Below what the next experiment needs, the loop
is PAUSED with the reason "disk full: /work has 12 MB free; the next experiment needs about 250 MB (its
run folder, the worktree's commit); free some space and it resumes", looks again every `interval`
seconds, says when it resumes, and Stop still works while it waits. A write that failed is then done
again: the ledger's append took its partial line back out (durable.py), so the record is written once;
an experiment whose run failed before its verdict was recorded is recorded as interrupted and runs again
under a new number; one that crashed while the disk was short is queued to run again (its crash stays
recorded: it did crash, but not because of its change).

What the next experiment needs: the largest of the last few run folders, twice, plus 200 MB. A run folder
holds the run's logs (capped per run, `[run] log_max_mb`, 64 MB by default, one per smoke, full, repeat
and confirmation run), its events and any weights it saved, so the recent ones predict the next; twice,
because an experiment may take more runs than the last one did (confirmations) and a change may make the
model bigger. The 200 MB cover git (a commit, its amend, an occasional automatic repack writing a new pack
before deleting the old ones), the ledger and the agent's context, and keep the loop from filling the
disk to its last byte, where the person's own editor and shell start failing too.

Must not import: pygls, rich, typer, an agent module.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from nightlab.protocol import events as ev
from nightlab.server.core.types import Experiment, ExperimentStatus, LoopState
from nightlab.server.loop.proposer import Stopped
from nightlab.server.loop.recovery import interrupted, rerun

if TYPE_CHECKING:
    from nightlab.server.loop.engine import Engine, Running

log = logging.getLogger(__name__)
T = TypeVar("T")
MB = 1 << 20
MARGIN = 200 * MB  # see the module's docstring
RECENT = 5  # run folders the estimate looks at
CHECK_EVERY_S = 30.0
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int:
    """Free space for this user on the filesystem holding `path` (tests replace this)."""
    return shutil.disk_usage(path).free


def is_full(exc: BaseException) -> bool:
    """A write that failed because the disk (or the quota) is full, as an OSError or as a tool's message
    (git's "No space left on device" inside a StoreError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FULL_ERRNOS:
            return True
        if "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem holding `path`: what a person knows the disk by."""
    path = existing(path).resolve()
    dev = path.stat().st_dev
    while path.parent != path and path.parent.stat().st_dev == dev:
        path = path.parent
    return path


def folder_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def human(n: int) -> str:
    return f"{n / (1 << 30):.1f} GB" if n >= 10 * (1 << 30) else f"{n / MB:.0f} MB"


class DiskGuard:
    def __init__(self, engine: Engine, stop: asyncio.Event, interval: float = CHECK_EVERY_S):
        self.engine, self.stop, self.interval = engine, stop, interval
        self._lock = asyncio.Lock()  # slots wait together: one pause, one message
        self.short_on: Path | None = None  # the folder whose disk was short last

    def paths(self) -> list[Path]:
        e = self.engine
        return [e.ledger.dir, e.runs_dir, e.store.worktree, e.store.toplevel]

    def needed(self) -> int:
        runs = self.engine.runs_dir
        names = [p.name for p in runs.iterdir()] if runs.is_dir() else []
        numbers = sorted((int(n) for n in names if n.isdigit()), reverse=True)
        largest = max((folder_size(runs / str(n)) for n in numbers[:RECENT]), default=0)
        return 2 * largest + MARGIN

    def shortage(self) -> str:
        """Why the next experiment cannot be written ("" when there is room)."""
        need, runs_dev = self.needed(), existing(self.engine.runs_dir).stat().st_dev
        seen: set[int] = set()
        for path in self.paths():
            dev = existing(path).stat().st_dev
            if dev in seen:
                continue
            seen.add(dev)
            want = need if dev == runs_dev else MARGIN
            free = free_bytes(existing(path))
            if free < want:
                self.short_on = path
                return (
                    f"disk full: {mount_point(path)} has {human(free)} free; the next experiment needs about "
                    f"{human(want)} (its run folder, the worktree's commit); free some space and it resumes"
                )
        return ""

    async def ready(self, failed: BaseException | None = None) -> bool:
        """Wait while the disk is short (PAUSED, saying why; after a failed write at least one check).
        False when the loop was stopped while it waited."""
        async with self._lock:
            why = self.shortage()
            if not why and failed is None:
                return not self.stop.is_set()
            why = why or f"disk full: a write failed ({failed}); it is tried again in {self.interval:g} s"
            self.engine.message(why, "warning")
            self.engine.set_state(LoopState.PAUSED, why)
            while why and not self.stop.is_set():
                try:
                    await asyncio.wait_for(self.stop.wait(), self.interval)
                except asyncio.TimeoutError:
                    pass
                why = self.shortage()
            if self.stop.is_set():
                return False
            where = self.short_on
            room = f" ({mount_point(where)} has {human(free_bytes(existing(where)))} free)" if where else ""
            self.engine.message(f"there is disk space again{room}: the loop resumes")
            return True

    async def retry(self, make: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`make()`, done again after a pause whenever it fails on a full disk (the experiment's commit and
        its first record: nothing of it exists until both are written). Stopped while waiting: Stopped."""
        while True:
            try:
                return await make(*args)
            except Exception as exc:
                if not is_full(exc):
                    raise
                log.warning("a write failed on a full disk: %s", exc)
                if not await self.ready(exc):
                    raise Stopped() from None

    async def finish(self, work: Awaitable[Experiment], running: Running) -> None:
        """An experiment's runs and verdict (`work`, the engine's _execute). A full disk on the way pauses
        the loop, then what was not recorded is: the verdict, or an interruption and a re-run. A crash
        while the disk is short is queued to run again. Stopped while waiting: the record stays running
        and the next start re-runs it (recovery)."""
        try:
            exp = await work
        except Exception as exc:
            if not is_full(exc):
                raise
            failed: BaseException = exc
            while await self.ready(failed):
                try:
                    self._settle(running)
                    if running.exp.status == ExperimentStatus.CRASH:  # on a full disk: not the change's fault
                        self._again(running.exp, f"#{running.exp.number} crashed on the full disk; it runs again")
                    return
                except Exception as again:
                    if not is_full(again):
                        raise
                    failed = again
            return
        if exp.status == ExperimentStatus.CRASH and self.shortage():
            self._again(exp, f"#{exp.number} crashed while the disk was full; it runs again once there is space")

    def _settle(self, running: Running) -> None:
        e, exp = self.engine, running.exp
        latest = e.ledger.get(exp.number)
        if latest is not None and latest.status != ExperimentStatus.RUNNING:
            return  # its record was written before the disk filled
        if exp.status == ExperimentStatus.RUNNING:  # the runs or the verdict failed: run it again
            final = interrupted(exp, "the disk filled up during this experiment; it is run again")
            e.ledger.finalize(final)
            e.emit(ev.EXPERIMENT_FINISHED, experiment=final.to_json())
            self._again(exp, f"#{exp.number} was interrupted by the full disk; it runs again")
        elif exp.status == ExperimentStatus.KEEP and e.store.head() == exp.commit:
            e.ledger.finalize(exp)  # kept and the branch moved: only its record is missing
            e.proposer.finished(exp)
            e.emit(ev.EXPERIMENT_FINISHED, experiment=exp.to_json())
        else:
            e.record(exp, running.slot)  # amend (again) and record

    def _again(self, exp: Experiment, text: str) -> None:
        e = self.engine
        files = {p: e.store.read_file(p, exp.commit) for p in e.settings.files.editable}
        e.proposer.pending.insert(0, rerun(exp, files))
        e.message(text, "warning")
