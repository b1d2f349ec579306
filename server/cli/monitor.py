"""`nightlab monitor DIR`: follows an autoresearch run that some other agent drives, read-only.

Reads `results.tsv` (rows appended over time) and `run.log` (step lines rewritten with "\\r", then the
summary block; truncated by each new run's `> run.log`) as they grow, with watchdog plus polling, and
turns them into typed updates: `RowAdded`, `RunProgress`, `RunFinished`, `ResultsRestarted` (a new
session's results.tsv). `snapshot()` sums them up; `render()` draws a snapshot with rich, `follow_plain`
and `follow_live` print them for the CLI. Never writes to the directory it watches.
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
    status: str  # keep | discard | crash (or whatever the agent wrote), lower-cased: "KEEP" counts as a keep
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


@dataclass
class ResultsRestarted:
    """results.tsv was replaced by one that does not continue it (a new session's header-only file):
    the rows so far are dropped and the new file's rows follow as `RowAdded`, numbered from 1."""

    previous_rows: int


Update = RowAdded | RunProgress | RunFinished | ResultsRestarted


@dataclass
class Snapshot:
    rows: list[ResultRow] = field(default_factory=list)
    best: float | None = None  # lowest val_bpb among keep rows
    best_row: ResultRow | None = None
    progress: Progress | None = None  # latest step of the current run; None once it finished
    last_summary: dict[str, float] = field(default_factory=dict)  # of the last finished run
    running: bool = False  # step lines seen and no summary yet

    def counts(self) -> dict[str, int]:
        """Rows per status, keep, discard and crash first (0 when there are none)."""
        counts = {"keep": 0, "discard": 0, "crash": 0}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return counts


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
        status=cells[3].strip().lower(),
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
        self._block: list[str] | None = None  # lines after the current run's "---", until it is reported
        self._log_grew_at = time.monotonic()
        self._polled = False

    # ----------------------------------------------------------------- reading
    def poll(self) -> list[Update]:
        """Every update since the last call, in order. Safe to call from any thread."""
        with self._lock:
            first, self._polled = not self._polled, True
            updates = self._read_log()
            if first:
                updates = self._before_start(updates)
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
        fresh = [row for row in (parse_row(line, 0) for line in self._results.read_lines()) if row is not None]
        updates: list[Update] = []
        if self._results.generation != self._results_generation:
            # Rewritten: an agent saved the whole file again (same rows first: report only the new ones),
            # or a new session began with a fresh file (shorter, or other rows: start over).
            self._results_generation = self._results.generation
            old = self._snapshot.rows
            if len(fresh) >= len(old) and all(a.commit == b.commit for a, b in zip(old, fresh, strict=False)):
                fresh = fresh[len(old) :]
            else:
                self._snapshot.rows, self._snapshot.best, self._snapshot.best_row = [], None, None
                updates.append(ResultsRestarted(previous_rows=len(old)))
        for row in fresh:
            row.number = len(self._snapshot.rows) + 1
            self._snapshot.rows.append(row)
            if row.status == "keep" and row.val_bpb is not None and row.val_bpb > 0:
                if self._snapshot.best is None or row.val_bpb < self._snapshot.best:
                    self._snapshot.best, self._snapshot.best_row = row.val_bpb, row
            updates.append(RowAdded(row))
        return updates

    def _before_start(self, updates: list[Update]) -> list[Update]:
        """The first read's log updates, less those of runs that ended before the monitor started: such
        a run is the last run (its summary is in the snapshot), not news. A run has ended when its summary
        block or FAIL was read, or when results.tsv changed after run.log (its row was logged)."""
        ends = [i for i, update in enumerate(updates) if isinstance(update, RunFinished)]
        if ends:
            updates = updates[ends[-1] + 1 :]
        if self._block is not None or (self._snapshot.running and self._logged_after_log()):
            self._finish()
            return []
        return updates

    def _logged_after_log(self) -> bool:
        try:
            return self.results_path.stat().st_mtime_ns > self.log_path.stat().st_mtime_ns
        except OSError:
            return False

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


SCREEN_LINES = 9  # what the live view draws besides its table rows: title, borders, header, caption, footer


def fit_rows(height: int) -> int:
    """How many table rows fit a terminal `height` lines high, with the rest of the live view."""
    return max(1, height - SCREEN_LINES)


def counts_line(snapshot: Snapshot) -> str:
    """ "126 rows: 23 keep, 102 discard, 1 crash"."""
    counts = snapshot.counts()
    return f"{len(snapshot.rows)} rows: " + ", ".join(f"{n} {status}" for status, n in counts.items())


def row_line(row: ResultRow) -> str:
    """One row as `--plain` prints it; a val_bpb that is not a number (N/A, empty) as "-"."""
    value = "-" if row.val_bpb is None else f"{row.val_bpb:.6f}"
    return f"row {row.number}: {row.commit} {value} {row.status} {row.description}"


def render(snapshot: Snapshot, *, last_rows: int | None = 15):
    """A rich renderable of a snapshot: the counts, the latest `last_rows` rows (None: all, 0: none, only
    the counts), the best kept val_bpb, the current run. A row is one line (long descriptions are cut)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    rows = snapshot.rows if last_rows is None else snapshot.rows[max(0, len(snapshot.rows) - last_rows) :]
    title = f"results.tsv: {counts_line(snapshot)}"
    shown = f"the last {len(rows)} of {len(snapshot.rows)} rows (--rows N or --all for more)"
    table = Table(title=title, caption=shown if len(rows) < len(snapshot.rows) else None, expand=False)
    for name, justify in (
        ("#", "right"),
        ("commit", "left"),
        ("val_bpb", "right"),
        ("mem GB", "right"),
        ("status", "left"),
        ("description", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "description")  # type: ignore[arg-type]
    styles = {"keep": "green", "discard": "dim", "crash": "red"}
    for row in rows:
        best = snapshot.best_row is row
        table.add_row(
            str(row.number),
            row.commit,
            "" if row.val_bpb is None else f"{row.val_bpb:.6f}",
            "" if row.memory_gb is None else f"{row.memory_gb:.1f}",
            row.status,
            # the column narrows to fit the terminal, the text is cut there; Text: "[x]" is not markup
            Text(row.description, no_wrap=True, overflow="ellipsis"),
            style="bold green" if best else styles.get(row.status, ""),
        )
    head = "best: none kept yet" if snapshot.best is None else f"best: {snapshot.best:.6f}"
    if snapshot.best_row is not None:
        head += f" ({snapshot.best_row.commit}, #{snapshot.best_row.number})"
    lines = [table if rows else Text(title), Text(head, style="bold")]
    progress = snapshot.progress
    if progress is not None:
        done = f"{100 * progress.fraction:.1f}%" if progress.fraction is not None else "?"
        loss = f"{progress.loss:.4f}" if progress.loss is not None else "?"
        lines.append(Text(f"running: step {progress.step} ({done}), loss {loss}"))
    elif snapshot.last_summary:
        value = snapshot.last_summary.get("val_bpb")
        lines.append(Text("last run: " + (f"val_bpb {value:.6f}" if value is not None else "no val_bpb")))
    return Group(*lines)


def _news(update: Update) -> str | None:
    """What `--plain` (and `--all`, above the live view) prints for an update; None for step lines."""
    if isinstance(update, RowAdded):
        return row_line(update.row)
    if isinstance(update, RunFinished):
        return f"run finished: {'FAIL' if update.failed else update.metrics.get('val_bpb')}"
    if isinstance(update, ResultsRestarted):
        return f"results.tsv started over (a new session; {update.previous_rows} rows before)"
    return None


def follow_plain(monitor: Monitor, console, *, timeout: float | None = None) -> None:
    """A line per row, finished run and restart, until `timeout` seconds pass (or Ctrl-C)."""
    for update in monitor.updates(timeout=timeout):
        line = _news(update)
        if line is not None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def follow_live(
    monitor: Monitor, console, *, timeout: float | None = None, rows: int | None = None, every_row: bool = False
) -> None:
    """The live view: the last `rows` rows (default: those that fit the terminal, at each refresh), or
    with `every_row` each row printed above the view as it comes (the terminal's scrollback holds them
    all) and the view only the counts, the best and the current run."""
    from rich.live import Live

    def view():
        shown = 0 if every_row else rows if rows is not None else fit_rows(console.height)
        return render(monitor.snapshot(), last_rows=shown)

    with Live(get_renderable=view, console=console, refresh_per_second=2) as live:
        for update in monitor.updates(timeout=timeout):
            line = _news(update)
            if every_row and line is not None and not isinstance(update, RunFinished):
                live.console.print(line, markup=False, highlight=False, soft_wrap=True)
            live.refresh()
