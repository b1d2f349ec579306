"""Following an autoresearch directory that another process writes: results.tsv rows and run.log."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from rich.console import Console

from nightlab.server.cli.monitor import (
    Monitor,
    ResultRow,
    ResultsRestarted,
    RowAdded,
    RunFinished,
    RunProgress,
    Snapshot,
    fit_rows,
    parse_row,
    render,
)
from nightlab.server.run.summary import format_summary

HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
ROWS = [
    "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline",
    "b2c3d4e\t0.993200\t44.2\tkeep\tincrease LR to 0.04",
    "c3d4e5f\t1.005000\t44.0\tdiscard\tswitch to GeLU activation",
    "d4e5f6g\t0.000000\t0.0\tcrash\tdouble model width (OOM)",
    "e5f6g7h\t0.991000\t44.1\tkeep\twarmup 5%",
]
BLOCK = format_summary(
    {
        "val_bpb": 0.991,
        "training_seconds": 300.1,
        "total_seconds": 325.9,
        "peak_vram_mb": 45060.2,
        "mfu_percent": 39.8,
        "total_tokens_M": 499.6,
        "num_steps": 953,
        "num_params_M": 50.3,
        "depth": 8,
    }
)


def write_run(directory: Path, rows: list[str], *, pause: float) -> None:
    """What an autoresearch agent does, sped up: per experiment, `> run.log` with steps, then a row."""
    results = directory / "results.tsv"
    results.write_text(HEADER)
    for _number, row in enumerate(rows):
        with open(directory / "run.log", "w") as log:  # truncated like `uv run train.py > run.log`
            for step in range(3):
                log.write(
                    f"\rstep {step:05d} ({(step + 1) * 33.3:.1f}%) | loss: {3 - step / 10:.6f} | "
                    f"lrm: 1.00 | dt: 415ms | tok/sec: 1,262,501 | mfu: 30.5% | epoch: 1 | remaining: 1s    "
                )
                log.flush()
                time.sleep(pause / 4)
            log.write("\n" + (BLOCK if "crash" not in row else "Traceback (most recent call last):\nOOM") + "\n")
        time.sleep(pause / 4)
        with open(results, "a") as handle:
            handle.write(row + "\n")


def test_sees_every_row_once_in_order_and_some_progress(tmp_path: Path) -> None:
    writer = threading.Thread(target=write_run, args=(tmp_path, ROWS), kwargs=dict(pause=0.4))
    monitor = Monitor(tmp_path, poll_interval_s=0.2, settle_s=0.3)
    updates = []
    writer.start()
    with closing(monitor.updates(timeout=10)) as stream:  # closing stops the watchdog observer at once
        for update in stream:
            updates.append(update)
            if sum(isinstance(u, RowAdded) for u in updates) == len(ROWS):
                break
    writer.join()
    rows = [u.row for u in updates if isinstance(u, RowAdded)]
    assert [r.commit for r in rows] == [row.split("\t")[0] for row in ROWS]
    assert [r.number for r in rows] == [1, 2, 3, 4, 5]
    assert any(isinstance(u, RunProgress) for u in updates)
    finished = [u for u in updates if isinstance(u, RunFinished)]
    # A block is lost if the next run truncates run.log before we read it, so ask for one, not all.
    assert any(u.metrics.get("val_bpb") == pytest.approx(0.991) and not u.failed for u in finished)
    assert any(u.failed for u in finished)  # the crash with a traceback and no block

    snap = monitor.snapshot()
    assert len(snap.rows) == len(ROWS)
    assert snap.best == pytest.approx(0.991) and snap.best_row is not None and snap.best_row.commit == "e5f6g7h"
    assert monitor.poll() == []  # nothing is reported twice


async def test_async_updates(tmp_path: Path) -> None:
    writer = threading.Thread(target=write_run, args=(tmp_path, ROWS[:2]), kwargs=dict(pause=0.3))
    monitor = Monitor(tmp_path, poll_interval_s=0.2, settle_s=0.3)
    stop = asyncio.Event()
    rows = []
    writer.start()

    async def collect() -> None:
        async for update in monitor.aupdates(stop=stop):
            if isinstance(update, RowAdded):
                rows.append(update.row.commit)
                if len(rows) == 2:
                    stop.set()

    await asyncio.wait_for(collect(), timeout=10)
    await asyncio.to_thread(writer.join)
    assert rows == ["a1b2c3d", "b2c3d4e"]


def test_snapshot_of_existing_files(tmp_path: Path) -> None:
    (tmp_path / "results.tsv").write_text(HEADER + "\n".join(ROWS) + "\npartial\t0.9")  # last line unfinished
    (tmp_path / "run.log").write_text("\rstep 00001 (50.0%) | loss: 2.0    \rstep 00002 (97.9%) | loss: 1.9    ")
    monitor = Monitor(tmp_path)
    updates = monitor.poll()
    assert [type(u) for u in updates] == [RunProgress] + [RowAdded] * 5  # step 2 is still being written
    snap = monitor.snapshot()
    assert snap.best == pytest.approx(0.991) and snap.running and snap.progress.step == 1


def test_rewritten_results_file_does_not_repeat_rows(tmp_path: Path) -> None:
    results = tmp_path / "results.tsv"
    results.write_text(HEADER + "\n".join(ROWS[:3]) + "\n")
    monitor = Monitor(tmp_path)
    assert len(monitor.poll()) == 3
    replacement = tmp_path / "new.tsv"
    replacement.write_text(HEADER + "\n".join(ROWS) + "\n")
    replacement.replace(results)  # an editor saving the whole file
    assert [u.row.commit for u in monitor.poll()] == ["d4e5f6g", "e5f6g7h"]


def test_fail_line_finishes_the_run(tmp_path: Path) -> None:
    monitor = Monitor(tmp_path)
    assert monitor.poll() == []  # started before the run: its end is news (a run that ended before is not)
    (tmp_path / "run.log").write_text("\rstep 00001 (5.0%) | loss: nan    \nFAIL\n")
    updates = monitor.poll()
    assert isinstance(updates[-1], RunFinished) and updates[-1].failed


ROW_CASES = [
    ("a1b2c3d\t0.997900\t44.0\tkeep\tbaseline", ResultRow(1, "a1b2c3d", 0.9979, 44.0, "keep", "baseline")),
    ("b\t0.000000\t0.0\tcrash\ttabs\tin description", ResultRow(1, "b", 0.0, 0.0, "crash", "tabs\tin description")),
    ("c\tn/a", ResultRow(1, "c", None, None, "", "")),
    (HEADER.strip(), None),
    ("", None),
]


@pytest.mark.parametrize("line,expected", ROW_CASES)
def test_parse_row(line: str, expected) -> None:
    assert parse_row(line, 1) == expected


def test_render(tmp_path: Path) -> None:
    rows = [parse_row(line, i + 1) for i, line in enumerate(ROWS)]
    snap = Snapshot(rows=rows, best=0.991, best_row=rows[-1], running=False, last_summary={"val_bpb": 0.991})
    console = Console(record=True, width=120)
    console.print(render(snap))
    text = console.export_text()
    assert "e5f6g7h" in text and "best: 0.991000" in text


# ----------------------------------------------------------------- issue 12: the monitor's defects

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]
MAR8 = Path(__file__).resolve().parents[2] / "shared" / "data" / "autoresearch-mar8" / "results.tsv"


def test_plain_prints_a_row_whose_val_bpb_is_not_a_number(tmp_path: Path) -> None:
    """Bug: `--plain` died on `N/A` or an empty val_bpb (TypeError: NoneType.__format__)."""
    rows = ["a1\tN/A\t\tcrash\tOOM at start", "b2\t\t44.0\tdiscard\tno value", "c3\t0.990000\t44.0\tkeep\tok"]
    (tmp_path / "results.tsv").write_text(HEADER + "\n".join(rows) + "\n")
    proc = subprocess.run(
        [*NIGHTLAB, "monitor", str(tmp_path), "--plain", "--timeout", "1"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "row 1: a1 - crash OOM at start" in proc.stdout and "row 2: b2 - discard no value" in proc.stdout
    assert "3 rows: 1 keep, 1 discard, 1 crash" in proc.stdout and "best val_bpb: 0.990000" in proc.stdout


def test_a_failing_monitor_leaves_no_timer_behind(tmp_path: Path, monkeypatch) -> None:
    """Bug: `--timeout` started a non-daemon timer thread, so a monitor that failed hung until it ran out."""
    from typer.testing import CliRunner

    from nightlab.server.cli.commands import app

    def broken(self):
        raise RuntimeError("cannot read")

    monkeypatch.setattr(Monitor, "poll", broken)
    before = set(threading.enumerate())
    result = CliRunner().invoke(app, ["monitor", str(tmp_path), "--plain", "--timeout", "30"])
    left = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for thread in left:
        getattr(thread, "cancel", lambda: None)()
    assert isinstance(result.exception, RuntimeError)
    assert left == []


def test_results_replaced_by_a_shorter_file_is_followed_again(tmp_path: Path) -> None:
    """Bug: a new session's header-only results.tsv hid every row until it was longer than the old one."""
    results = tmp_path / "results.tsv"
    results.write_text(HEADER + "\n".join(ROWS) + "\n")
    monitor = Monitor(tmp_path)
    assert len(monitor.poll()) == len(ROWS)
    results.write_text(HEADER)  # autoresearch's first step of a session, in place
    assert monitor.poll() == [ResultsRestarted(previous_rows=len(ROWS))]
    snap = monitor.snapshot()
    assert snap.rows == [] and snap.best is None
    with open(results, "a") as handle:
        handle.write("f1\t1.010000\t44.0\tkeep\tnew baseline\n")
    updates = monitor.poll()
    assert [(u.row.number, u.row.commit) for u in updates if isinstance(u, RowAdded)] == [(1, "f1")]
    assert monitor.snapshot().best == pytest.approx(1.01)
    replacement = tmp_path / "other.tsv"
    replacement.write_text(HEADER + "\n".join(ROWS[:2]) + "\n")  # as many rows, other commits: another session
    replacement.replace(results)
    updates = monitor.poll()
    assert updates[0] == ResultsRestarted(previous_rows=1)
    assert [u.row.commit for u in updates[1:] if isinstance(u, RowAdded)] == ["a1b2c3d", "b2c3d4e"]


def test_upper_case_keep_is_counted(tmp_path: Path) -> None:
    """Bug: a row whose status was `KEEP` was neither counted as kept nor the best."""
    (tmp_path / "results.tsv").write_text(
        HEADER + "a\t0.99\t44.0\tKEEP\tx\nb\t0.98\t44.0\tKeep\ty\nc\t1.2\t1\tDISCARD\tz\n"
    )
    monitor = Monitor(tmp_path)
    monitor.poll()
    snap = monitor.snapshot()
    assert snap.best == pytest.approx(0.98) and snap.best_row is not None and snap.best_row.commit == "b"
    assert snap.counts() == {"keep": 2, "discard": 1, "crash": 0}


def test_a_run_that_ended_before_the_monitor_started_is_not_news(tmp_path: Path) -> None:
    """Bug: at start the monitor reported "run finished" for the run whose summary was already in run.log."""
    (tmp_path / "results.tsv").write_text(HEADER + "\n".join(ROWS) + "\n")
    log = tmp_path / "run.log"
    log.write_text("\rstep 00001 (50.0%) | loss: 2.0    \rstep 00002 (100.0%) | loss: 1.9    \n" + BLOCK)
    monitor = Monitor(tmp_path, settle_s=0.0)
    updates = monitor.poll() + monitor.poll()
    assert [type(u) for u in updates] == [RowAdded] * len(ROWS)
    snap = monitor.snapshot()
    assert not snap.running and snap.last_summary.get("val_bpb") == pytest.approx(0.991)
    # A run that died with a traceback, and whose row was logged afterwards, ended too.
    log.write_text("\rstep 00001 (50.0%) | loss: 2.0    \nTraceback (most recent call last):\nOOM\n")
    os.utime(log, ns=(1_000_000_000, 1_000_000_000))
    monitor = Monitor(tmp_path, settle_s=0.0)
    assert [type(u) for u in monitor.poll()] == [RowAdded] * len(ROWS)
    assert not monitor.snapshot().running
    # A run still going at the start is reported as before.
    log.write_text("\rstep 00001 (50.0%) | loss: 2.0    \rstep 00002 (60.0%) | loss: 1.9    ")
    assert RunProgress in [type(u) for u in Monitor(tmp_path).poll()]


def _snapshot_of(lines: list[str]) -> Snapshot:
    rows = [row for row in (parse_row(line, i + 1) for i, line in enumerate(lines)) if row is not None]
    kept = [r for r in rows if r.status == "keep" and r.val_bpb]
    best = min(kept, key=lambda r: r.val_bpb or 0) if kept else None
    return Snapshot(rows=rows, best=best.val_bpb if best else None, best_row=best)


def test_render_shows_the_counts_and_the_best() -> None:
    """Bug: the live view showed neither keep/discard/crash counts nor how many rows there are."""
    console = Console(record=True, width=120)
    console.print(render(_snapshot_of(ROWS)))
    text = console.export_text()
    assert "results.tsv: 5 rows: 3 keep, 1 discard, 1 crash" in text and "best: 0.991000 (e5f6g7h, #5)" in text


def test_live_view_rows_fit_the_terminal_and_all_are_reachable() -> None:
    """Bug: the live view showed the last fifteen rows whatever the terminal, and no way to see the others."""
    many = [
        f"c{i:04d}\t{1 - i / 1000:.6f}\t44.0\t{'keep' if i % 3 == 0 else 'discard'}\tidea {i} " + "x" * 80
        for i in range(60)
    ]
    snap = _snapshot_of(many)
    console = Console(record=True, width=80, height=40)
    console.print(render(snap, last_rows=fit_rows(40)))
    text = console.export_text()
    assert len(text.splitlines()) <= 40  # nothing scrolls off: the footer stays on screen
    assert "c0059" in text and "c0029" in text and "c0028" not in text  # as many rows as fit: 31
    assert "the last 31 of 60 rows (--rows N or --all for more)" in text
    console = Console(record=True, width=80)
    console.print(render(snap, last_rows=None))
    text = console.export_text()
    assert all(f"c{i:04d}" in text for i in range(60))


def test_monitor_all_prints_every_row(tmp_path: Path) -> None:
    """`--all` prints every row above the live view, where the terminal's scrollback keeps them."""
    from nightlab.server.cli.monitor import follow_live

    (tmp_path / "results.tsv").write_text(HEADER + "\n".join(ROWS) + "\n")
    console = Console(record=True, width=100, force_terminal=True)
    follow_live(Monitor(tmp_path), console, timeout=0.5, every_row=True)
    text = console.export_text()
    assert all(f"row {i + 1}: {row.split(chr(9))[0]}" in text for i, row in enumerate(ROWS))
    assert "results.tsv: 5 rows: 3 keep, 1 discard, 1 crash" in text


@pytest.mark.skipif(not MAR8.exists(), reason=f"{MAR8} is missing")
def test_karpathys_mar8_results_followed_live_as_another_process_appends_them(tmp_path: Path) -> None:
    """What worked and must keep working: all 126 real rows, the `baseline` commit and the crash included."""
    lines = MAR8.read_text().splitlines(keepends=True)
    target = tmp_path / "results.tsv"
    target.write_text(lines[0])
    script = (
        "import sys, time\n"
        "with open(sys.argv[1], 'a') as out:\n"
        "    for line in open(sys.argv[2]).readlines()[1:]:\n"
        "        out.write(line); out.flush(); time.sleep(0.002)\n"
    )
    monitor = Monitor(tmp_path, poll_interval_s=0.05)
    writer = subprocess.Popen([sys.executable, "-c", script, str(target), str(MAR8)])
    rows = []
    with closing(monitor.updates(timeout=30)) as stream:
        for update in stream:
            rows += [update.row] if isinstance(update, RowAdded) else []
            if len(rows) == 126:
                break
    writer.wait(timeout=30)
    assert [r.number for r in rows] == list(range(1, 127))
    assert rows[0].commit == "baseline" and rows[15].status == "crash" and rows[15].val_bpb == 0.0
    snap = monitor.snapshot()
    assert snap.counts() == {"keep": 23, "discard": 102, "crash": 1}
    assert snap.best == pytest.approx(0.969686) and snap.best_row is not None and snap.best_row.number == 119
