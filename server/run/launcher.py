"""The seam between the loop and a training process: what one run needs, and who starts it.

A `RunRequest` is everything one run needs, as plain data that could travel to another machine: the
folder holding the experiment's commit (a remote launcher ships its files), the command, the budget,
the seed, the deadline, the metric's name, the slot's devices and, for Nightlab's own trainer, what
the judge needs (the committed files). A `Launcher` starts it, streams its
progress while it trains, honours a cancel token and returns a `RunResult` (a failed run is a result,
never an exception). `Runner` (runner.py) is the local subprocess launcher; a sandboxed one and a Ray
one go behind the same protocol.
Must not import: git, torch, an agent, the ledger, the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from nightlab.server.core.types import Progress, RunResult

ProgressCallback = Callable[[Progress], None]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeRequest:
    """The run is judged (run/judge.py): its metric comes from the workspace's judge.py, started fresh
    after training in a folder holding these files, the experiment's committed editable and protected
    files (path -> content): never the worktree as training left it."""

    files: Mapping[str, bytes] = field(default_factory=dict)
    deadline_s: float = 300.0  # the judge's own wall clock


@dataclass(frozen=True)
class RunRequest:
    workdir: Path  # holds the experiment's commit, checked out
    command: str  # argv as one shell-quoted string, run inside workdir
    log_path: Path  # stdout and stderr together
    events_path: Path  # the trainer's JSON-lines events (NIGHTLAB_EVENTS)
    seed: int
    deadline_s: float  # wall clock after which the run is killed: a timeout
    budget_seconds: float | None = None  # exactly one of the two budgets is set
    budget_tokens: int | None = None
    metric_name: str = "val_bpb"  # the summary key the run must print
    cuda_visible_devices: str | None = None  # None: inherit; "": hide every GPU
    threads: int | None = None  # CPU threads, for CPU slots that share the cores
    judge: JudgeRequest | None = None  # None: the run's own summary block is its result (self-reported)


@runtime_checkable
class Launcher(Protocol):
    async def launch(
        self, request: RunRequest, on_progress: ProgressCallback | None = None, cancel: asyncio.Event | None = None
    ) -> RunResult:
        """Run it to the end, the deadline or the cancel token; progress comes through `on_progress`
        (on the caller's event loop) while it trains."""
        ...


def safe_progress(callback: ProgressCallback, progress: Progress) -> None:
    """Calls a launcher's progress callback; a broken display must not stop the night's training."""
    try:
        callback(progress)
    except Exception:
        log.exception("on_progress callback failed")
