"""`nightlab monitor DIR`: follows an autoresearch run that some other agent drives, read-only.

Reads `results.tsv` (rows appended over time) and `run.log` (step lines rewritten with "\\r", then the
summary block; truncated by each new run's `> run.log`) as they grow, with watchdog plus polling, and
turns them into typed updates: `RowAdded`, `RunProgress`, `RunFinished`. `snapshot()` sums them up;
`render()` draws a snapshot with rich for the CLI. Never writes to the directory it watches.
Must not import: git, torch, anthropic, or nightlab.server modules other than `types`, `summary`
and `follow` (for its file-following helpers).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nightlab.server.core.types import Progress
from nightlab.server.run.follow import FileTail, Watch
from nightlab.server.run.summary import has_fail, parse_step_line, parse_summary

RESULTS_HEADER = ("commit", "val_bpb", "memory_gb", "status", "description")


@dataclass
class ResultRow:
    """One row of autoresearch's results.tsv (`val_bpb` 0.0 and `memory_gb` 0.0 for a crash)."""

    number: int  # 1-based position among the data rows
    commit: str
    val_bpb: float | None
    memory_gb: float | None
    status: str  # keep | discard | crash (or whatever the agent wrote)
    description: str


@dataclass
class RowAdded:
    row: ResultRow


@dataclass
class RunProgress:
    progress: Progress


@dataclass
class RunFinished:
    """The current run.log ended with a summary block (`failed` False) or FAIL / no val_bpb (True)."""

    metrics: dict[str, float]
    failed: bool


Update = RowAdded | RunProgress | RunFinished


@dataclass
class Snapshot:
    rows: list[ResultRow] = field(default_factory=list)
    best: float | None = None  # lowest val_bpb among keep rows
    best_row: ResultRow | None = None
    progress: Progress | None = None  # latest step of the current run; None once it finished
    last_summary: dict[str, float] = field(default_factory=dict)  # of the last finished run
    running: bool = False  # step lines seen and no summary yet


def parse_row(line: str, number: int) -> ResultRow | None:
    """A results.tsv line as a ResultRow; None for the header or a blank line."""
    if not line.strip():
        return None
    cells = line.rstrip("\r").split("\t", 4)
    if cells[0] == "commit":
        return None
    cells += [""] * (5 - len(cells))

    def number_or_none(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    return ResultRow(
        number=number,
        commit=cells[0].strip(),
        val_bpb=number_or_none(cells[1]),
        memory_gb=number_or_none(cells[2]),
        status=cells[3].strip(),
        description=cells[4].strip(),
    )


class Monitor:
    """Follows `directory`'s results.tsv and run.log. `poll()` reads what is new; the iterators wait."""

    def __init__(
        self,
        directory: Path | str,
        *,
        results_name: str = "results.tsv",
        log_name: str = "run.log",
        poll_interval_s: float = 1.0,
        settle_s: float = 1.0,
    ):
        self.directory = Path(directory)
        self.results_path = self.directory / results_name
        self.log_path = self.directory / log_name
        self.poll_interval_s = poll_interval_s
        self.settle_s = settle_s  # a summary block with no `depth:` line counts as complete after this quiet
        self._results = FileTail(self.results_path)
        self._log = FileTail(self.log_path, split_cr=True)
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._results_generation = 0
        self._log_generation = 0
        self._row_cursor = 0  # data rows read from the current version of results.tsv
        self._block: list[str] | None = None  # lines after the current run's "---", until it is reported
        self._log_grew_at = time.monotonic()
        self._polled = False

    # ----------------------------------------------------------------- reading
    def poll(self) -> list[Update]:
        """Every update since the last call, in order. Safe to call from any thread."""
        with self._lock:
            first, self._polled = not self._polled, True
            updates = self._read_log()
            rows = self._read_results()
            if rows and self._snapshot.running and not first:
                # The agent logs a row once the run is over; a run that died with a traceback has no
                # block or FAIL line, so the row is how we learn that it finished. Not on the first
                # read: rows that were there before we came belong to earlier runs.
                updates += self._finish()
            return updates + rows

    def snapshot(self) -> Snapshot:
        with self._lock:
            snap = self._snapshot
            return Snapshot(
                rows=list(snap.rows),
                best=snap.best,
                best_row=snap.best_row,
                progress=snap.progress,
                last_summary=dict(snap.last_summary),
                running=snap.running,
            )

    def _read_results(self) -> list[Update]:
        lines = self._results.read_lines()
        if self._results.generation != self._results_generation:
            # Rewritten (an agent saved the whole file again): count from the top and report only rows
            # past those already reported, assuming a rewrite keeps the old rows and adds at the end.
            self._results_generation = self._results.generation
            self._row_cursor = 0
        updates: list[Update] = []
        for line in lines:
            if parse_row(line, 0) is None:
                continue
            self._row_cursor += 1
            if self._row_cursor <= len(self._snapshot.rows):
                continue
            row = parse_row(line, self._row_cursor)
            assert row is not None
            self._snapshot.rows.append(row)
            if row.status == "keep" and row.val_bpb is not None and row.val_bpb > 0:
                if self._snapshot.best is None or row.val_bpb < self._snapshot.best:
                    self._snapshot.best, self._snapshot.best_row = row.val_bpb, row
            updates.append(RowAdded(row))
        return updates

    def _read_log(self) -> list[Update]:
        lines = self._log.read_lines()
        now = time.monotonic()
        updates: list[Update] = []
        if self._log.generation != self._log_generation:  # `> run.log` truncated it: a new run began
            self._log_generation = self._log.generation
            updates += self._finish()  # the old run's open block (or its traceback) ends first
            self._block = None
        if lines:
            self._log_grew_at = now
        for line in lines:
            progress = parse_step_line(line)
            if progress is not None:
                self._block = None  # steps after a block: a new run appended to the same log
                self._snapshot.progress, self._snapshot.running = progress, True
                updates.append(RunProgress(progress))
            elif line.strip() == "---":
                self._block = []
            elif has_fail(line):
                self._block = (self._block or []) + ["FAIL"]
                updates += self._finish()
            elif self._block is not None:
                self._block.append(line)
        # A block is complete once its last key arrives, or when the log has not grown for a while.
        if self._block is not None:
            if any(line.startswith("depth:") for line in self._block) or now - self._log_grew_at >= self.settle_s:
                updates += self._finish()
        return updates

    def _finish(self) -> list[Update]:
        """Ends the current run, if one is running, with whatever block it printed (none: failed)."""
        if not self._snapshot.running and self._block is None:
            return []
        text = "\n".join(self._block or [])
        metrics = parse_summary("---\n" + text)
        self._block = None
        self._snapshot.last_summary, self._snapshot.progress, self._snapshot.running = metrics, None, False
        return [RunFinished(metrics=metrics, failed=has_fail(text) or "val_bpb" not in metrics)]

    # ----------------------------------------------------------------- waiting
    def updates(self, *, stop: threading.Event | None = None, timeout: float | None = None) -> Iterator[Update]:
        """Yields updates as they happen until `stop` is set or `timeout` seconds pass (forever if neither)."""
        changed = threading.Event()
        watch = Watch({self.results_path, self.log_path}, changed.set)
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while not (stop is not None and stop.is_set()):
                changed.clear()
                yield from self.poll()
                wait = self.poll_interval_s if end is None else min(self.poll_interval_s, end - time.monotonic())
                if wait <= 0:
                    break
                changed.wait(wait)  # woken by watchdog at once; the timeout is the polling fallback
        finally:
            watch.stop()

    async def aupdates(self, *, stop: asyncio.Event | None = None) -> AsyncIterator[Update]:
        """The same as `updates`, for an event loop: `async for update in monitor.aupdates(): ...`."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()
        watch = Watch({self.results_path, self.log_path}, lambda: loop.call_soon_threadsafe(changed.set))
        try:
            while not (stop is not None and stop.is_set()):
                changed.clear()
                for update in self.poll():
                    yield update
                try:
                    await asyncio.wait_for(changed.wait(), self.poll_interval_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            await asyncio.to_thread(watch.stop)


def render(snapshot: Snapshot, *, last_rows: int = 15):
    """A rich renderable of a snapshot: the latest rows, the best kept val_bpb, the current run."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"results.tsv ({len(snapshot.rows)} rows)", expand=False)
    for name, justify in (
        ("#", "right"),
        ("commit", "left"),
        ("val_bpb", "right"),
        ("mem GB", "right"),
        ("status", "left"),
        ("description", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    styles = {"keep": "green", "discard": "dim", "crash": "red"}
    for row in snapshot.rows[-last_rows:]:
        best = snapshot.best_row is row
        table.add_row(
            str(row.number),
            row.commit,
            "" if row.val_bpb is None else f"{row.val_bpb:.6f}",
            "" if row.memory_gb is None else f"{row.memory_gb:.1f}",
            row.status,
            row.description,
            style="bold green" if best else styles.get(row.status, ""),
        )
    head = "best: none kept yet" if snapshot.best is None else f"best: {snapshot.best:.6f}"
    if snapshot.best_row is not None:
        head += f" ({snapshot.best_row.commit}, #{snapshot.best_row.number})"
    lines = [Text(head, style="bold")]
    progress = snapshot.progress
    if progress is not None:
        done = f"{100 * progress.fraction:.1f}%" if progress.fraction is not None else "?"
        loss = f"{progress.loss:.4f}" if progress.loss is not None else "?"
        lines.append(Text(f"running: step {progress.step} ({done}), loss {loss}"))
    elif snapshot.last_summary:
        value = snapshot.last_summary.get("val_bpb")
        lines.append(Text("last run: " + (f"val_bpb {value:.6f}" if value is not None else "no val_bpb")))
    return Group(table, *lines)
