"""Runs one training run on this machine: the local `Launcher` (launcher.py).

`Runner.run` starts the workspace's command in its own session and process group with an allow-listed
environment (env.py), its output through a pipe into a capped log (logcap.py: head and tail kept, no
line held whole), follows the events file while it grows (follow.py: watchdog, plus polling in case
inotify misses something) and the output's step lines as they come, kills the whole group at the
deadline or on cancel (processes.py), and turns the outcome into a `RunResult`. A judged run (the request's
`judge`: Nightlab's trainer) gets its data cache built first and its metric from the judge (judge.py).
A failed run is a result, never an exception. No global state but a memo of the data caches prepared:
several runs may go at once on one event loop.
Must not import: git, torch, anthropic, the ledger, the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from nightlab.server.core.types import Progress, RunResult, RunStatus
from nightlab.server.run import judge as judging
from nightlab.server.run import processes
from nightlab.server.run.curve import EVENT_LINE_MAX, json_event, num, progress_from_event
from nightlab.server.run.env import build_env
from nightlab.server.run.follow import FileTail, Watch, read_tail
from nightlab.server.run.launcher import ProgressCallback, RunRequest, safe_progress
from nightlab.server.run.logcap import DEFAULT_MAX_BYTES, CappedLog, LogPump, start_logged
from nightlab.server.run.outcome import crash_reason, last_lines
from nightlab.server.run.processes import PID_FILE, group_alive, kill_group
from nightlab.server.run.summary import SUMMARY_KEYS, parse_step_line, parse_summary

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- following a run
class _Follower:
    """Turns new lines of the events file and of the output into Progress; remembers the events summary."""

    def __init__(self, events_path: Path, emit: Callable[[Progress], None], started: float):
        self.events = FileTail(events_path, split_cr=False, max_line=EVENT_LINE_MAX)
        self.emit = emit
        self.started = started
        self.first_step_s: float | None = None
        self.steady_s: float | None = None  # when the first step past the warm-up steps came (runner's clock)
        self.summary: dict = {}
        self.fail: dict = {}
        self.last_step = -1
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:  # called from watchdog's thread and from the polling fallback
            self._poll()

    def _poll(self) -> None:
        while lines := self.events.read_lines(max_bytes=4 << 20):  # a flood of events, a batch at a time
            for line in lines:
                self._event(line)

    def _event(self, line: str) -> None:
        event = json_event(line)
        if event is None:
            return
        kind = event.get("event")
        if kind == "step":
            self._step(progress_from_event(event))
        elif kind == "summary":
            self.summary = event
        elif kind == "fail":
            self.fail = event

    def on_output(self, lines: list[str]) -> None:
        """Lines of the run's output (from the log pump's thread)."""
        with self._lock:
            # A script that writes events also prints step lines; use them only when there is no events file.
            if not self.events.exists():
                for line in lines:
                    self._step(parse_step_line(line))

    def _step(self, progress: Progress | None) -> None:
        if progress is None or progress.step <= self.last_step:
            return
        self.last_step = progress.step
        if self.first_step_s is None:
            self.first_step_s = time.monotonic() - self.started
        if self.steady_s is None and progress.step > judging.WARMUP_STEPS:
            self.steady_s = time.monotonic() - self.started
        self.emit(progress)

    def timing(self, ended: float) -> tuple[float, float]:
        """(first step seen -> `ended`, of it the warm-up steps'), by the runner's clock, in seconds."""
        first = self.first_step_s or 0.0
        return ended - first, (self.steady_s if self.steady_s is not None else ended) - first


_TAIL_BYTES = 256 << 10  # what the summary parse and the crash text read of the log: its end


# --------------------------------------------------------------------------- the runner
class Runner:
    """Runs training commands. Holds settings only, so one Runner may serve several slots at once."""

    def __init__(
        self,
        *,
        kill_grace_s: float = 3.0,
        poll_interval_s: float = 1.0,
        tail_lines: int = 50,
        parent_env: Mapping[str, str] | None = None,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.kill_grace_s = kill_grace_s
        self.poll_interval_s = poll_interval_s
        self.tail_lines = tail_lines
        self.log_max_bytes = log_max_bytes  # [run] log_max_mb: each run's log keeps its head and tail within it
        self.parent_env = parent_env  # None: os.environ at the time of each run
        self.data_folders: dict[tuple, tuple[Path, str]] = {}  # judged runs' data caches and their fingerprints

    async def run(
        self,
        workspace: Path,
        command: str,
        *,
        log_path: Path,
        events_path: Path,
        budget_seconds: float | None,
        budget_tokens: int | None,
        seed: int,
        deadline_s: float,
        cuda_visible_devices: str | None = None,
        threads: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        cancel: asyncio.Event | None = None,
        metric_name: str = "val_bpb",
    ) -> RunResult:
        """`launch` with the request's fields as keywords."""
        request = RunRequest(
            workdir=Path(workspace),
            command=command,
            log_path=Path(log_path),
            events_path=Path(events_path),
            seed=seed,
            deadline_s=deadline_s,
            budget_seconds=budget_seconds,
            budget_tokens=budget_tokens,
            metric_name=metric_name,
            cuda_visible_devices=cuda_visible_devices,
            threads=threads,
        )
        return await self.launch(request, on_progress, cancel)

    async def launch(
        self, request: RunRequest, on_progress: ProgressCallback | None = None, cancel: asyncio.Event | None = None
    ) -> RunResult:
        """One run of the request's command in its folder (the `Launcher` protocol). It is a crash unless it
        exits 0 with the request's metric (the settings' [metric] name) in its summary, finite."""
        r = request
        r.log_path.parent.mkdir(parents=True, exist_ok=True)
        r.events_path.parent.mkdir(parents=True, exist_ok=True)
        r.events_path.unlink(missing_ok=True)  # a stale file from an earlier run would be read as this one's
        why = await self._prepare(r) if r.judge is not None else ""  # before the clock: not the run's start-up
        started = time.monotonic()
        if cancel is not None and cancel.is_set():
            return RunResult(
                status=RunStatus.INTERRUPTED, error="cancelled before it started", log_path=str(r.log_path)
            )
        loop = asyncio.get_running_loop()

        def emit(progress: Progress) -> None:
            if on_progress is not None:
                loop.call_soon_threadsafe(safe_progress, on_progress, progress)

        follower = _Follower(r.events_path, emit, started)
        if why:
            return RunResult(RunStatus.CRASH, error=why, total_s=time.monotonic() - started, log_path=str(r.log_path))
        try:
            proc, pump = await self._start(r, follower)
        except (OSError, ValueError) as exc:  # command not found, bad quoting, missing workspace
            error = f"could not start {r.command!r}: {exc}"
            return RunResult(RunStatus.CRASH, error=error, total_s=time.monotonic() - started, log_path=str(r.log_path))
        watch = Watch({r.events_path}, follower.poll)
        status = None
        try:
            status = await self._wait(proc, follower, started + r.deadline_s, cancel)
        finally:
            if status is None:  # our caller was cancelled: leave no training behind
                await kill_group(proc.pid, self.kill_grace_s)
                pump.stop()
            await asyncio.to_thread(watch.stop)
        clock_s, warmup_s = follower.timing(time.monotonic() - started)  # first step seen -> exit
        # Stragglers of a run that ended by itself (dataloader workers, a forked daemon) go too.
        if group_alive(proc.pid):
            await kill_group(proc.pid, self.kill_grace_s)
        escaped = await asyncio.to_thread(processes.sweep_escaped, r.events_path)  # what left the group: daemons
        await asyncio.to_thread(pump.finish, 2.0)  # the output's end, unless an escaped process holds it
        processes.note_escaped(r.log_path, escaped)
        follower.poll()
        await asyncio.sleep(0)  # let progress callbacks already queued run before the result is returned
        total_s = time.monotonic() - started
        result = self._result(status, proc.returncode, follower, r.log_path, total_s, r.metric_name, bool(r.judge))
        if r.judge is None or result.status != RunStatus.OK:
            return result
        reported = {**result.metrics, **follower.summary}  # training's word: only for the budget's token count
        result = judging.informational(result, r.metric_name)
        env, data = self.env(r), self.data_folders.get(judging.data_key(r))
        argv_for = functools.partial(self.judge_argv, r)
        clock = (clock_s, warmup_s)
        return await judging.judge(r, result, clock=clock, reported=reported, argv_for=argv_for, env=env, data=data)

    async def _prepare(self, r: RunRequest) -> str:
        """A judged run's data cache, built before training (outside any sandbox); "" or why it failed."""
        judging.clear(judging.paths(r))
        key = judging.data_key(r)
        if not (self.data_folders.get(key, (Path("/nonexistent"),))[0] / "meta.json").exists():  # gone: built again
            folder, why = await judging.prepare_data(r, Runner.env(self, r))
            if folder is None:
                return why
            self.data_folders[key] = (folder, await asyncio.to_thread(judging.fingerprint, folder))
        return ""

    def judge_argv(self, r: RunRequest, argv: list[str], p: judging.JudgePaths) -> list[str]:
        """The judge's command line (a sandbox wraps it)."""
        return argv

    def argv(self, r: RunRequest) -> list[str]:
        """The command line that starts the run (a sandbox wraps it)."""
        return shlex.split(r.command)

    def env(self, r: RunRequest) -> dict[str, str]:
        """The run's environment: the allow-list of ours (env.py) and Nightlab's variables."""
        parent = os.environ if self.parent_env is None else self.parent_env
        return build_env(
            parent,
            events_path=r.events_path,
            seed=r.seed,
            budget_seconds=r.budget_seconds,
            budget_tokens=r.budget_tokens,
            cuda_visible_devices=r.cuda_visible_devices,
            threads=r.threads,
            weights_path=judging.paths(r).weights if r.judge is not None else None,
        )

    async def _start(self, r: RunRequest, follower: _Follower) -> tuple[asyncio.subprocess.Process, LogPump]:
        """The training process, in a session and process group of its own, its output through a pipe
        into the capped log (logcap.py). It is sent SIGKILL if the loop dies (Linux): the one moment no
        pgid file covers is right after the start."""
        processes.become_subreaper()  # a daemon that escapes the group is re-parented here, where the sweep finds it
        capped = CappedLog(r.log_path, self.log_max_bytes)
        proc, pump = await start_logged(self.argv(r), r.workdir, self.env(r), capped, follower.on_output)
        # The group id lets a later start kill this run if Nightlab itself dies (kill -9) mid-run.
        (r.log_path.parent / PID_FILE).write_text(str(proc.pid))
        return proc, pump

    async def _wait(
        self, proc: asyncio.subprocess.Process, follower: _Follower, deadline: float, cancel: asyncio.Event | None
    ) -> str:
        """Waits for the process, polling the files meanwhile; returns "exited", "timeout" or "interrupted"."""
        exited = asyncio.ensure_future(proc.wait())
        cancelled = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    outcome = "timeout"
                    break
                waits = [exited] + ([cancelled] if cancelled else [])
                await asyncio.wait(
                    waits, timeout=min(self.poll_interval_s, remaining), return_when=asyncio.FIRST_COMPLETED
                )
                if exited.done():
                    return "exited"
                if cancelled is not None and cancelled.done():
                    outcome = "interrupted"
                    break
                await asyncio.to_thread(follower.poll)  # the fallback for events inotify did not report
            await kill_group(proc.pid, self.kill_grace_s)
            # Bounded: a process stuck in the kernel (a hung GPU driver) must not hang the loop with it.
            await asyncio.wait([exited], timeout=10.0)
            return outcome
        finally:
            for task in (exited, cancelled):
                if task is not None and not task.done():
                    task.cancel()

    def _result(
        self,
        outcome: str,
        returncode: int | None,
        follower: _Follower,
        log_path: Path,
        total_s: float,
        metric_name: str = "val_bpb",
        judged: bool = False,
    ) -> RunResult:
        text = read_tail(log_path, _TAIL_BYTES)  # the block is at the end; the log is not read whole
        metrics = parse_summary(text)
        events_summary = follower.summary
        # the block on stdout is the contract; the events summary fills gaps (the metric's too)
        for key in dict.fromkeys((*SUMMARY_KEYS, metric_name)):
            value = num(events_summary, key)
            if key not in metrics and value is not None:
                metrics[key] = value

        def timing(key: str) -> float:
            return num(events_summary, key) or 0.0

        result = RunResult(
            status=RunStatus.OK,
            metrics=metrics,
            returncode=returncode,
            total_s=total_s,
            log_path=str(log_path),
            startup_s=follower.first_step_s if follower.first_step_s is not None else timing("startup_s"),
            training_s=metrics.get("training_seconds", timing("training_s")),
            eval_s=timing("eval_s"),
            peak_memory_mb=metrics.get("peak_vram_mb", timing("peak_mem_mb")),
        )
        if outcome == "timeout":
            result.status = RunStatus.TIMEOUT
            result.error = f"killed at the deadline after {total_s:.1f} s"
        elif outcome == "interrupted":
            result.status = RunStatus.INTERRUPTED
            result.error = "cancelled"
        else:
            reason = crash_reason(returncode, text, metrics, follower.fail, metric_name, judged)
            if reason:
                result.status = RunStatus.CRASH
                result.error = reason + "\n" + last_lines(text, self.tail_lines)
        return result
