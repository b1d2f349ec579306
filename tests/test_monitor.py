"""Following an autoresearch directory that another process writes: results.tsv rows and run.log."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from rich.console import Console

from nightlab.server.cli.monitor import (
    Monitor,
    ResultRow,
    RowAdded,
    RunFinished,
    RunProgress,
    Snapshot,
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
    (tmp_path / "run.log").write_text("\rstep 00001 (5.0%) | loss: nan    \nFAIL\n")
    updates = Monitor(tmp_path).poll()
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
