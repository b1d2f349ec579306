"""The ledger: append-only jsonl, latest record per number, torn lines, results.tsv and its repair."""

from __future__ import annotations

import logging

import pytest

from nightlab.server.core.types import Experiment
from nightlab.server.record.ledger import Ledger, LedgerError, tsv_header, tsv_row


def exp(number: int, status: str = "running", metric: float | None = None, **kw) -> Experiment:
    kw.setdefault("commit", f"{number:07d}abcdef")
    kw.setdefault("description", f"experiment {number}")
    return Experiment(number=number, tag="t", status=status, metric=metric, **kw)


ROWS = [
    # experiment, the results.tsv row
    (exp(1, "keep", 0.9979, memory_gb=44.0, commit="a1b2c3d4e5"), "a1b2c3d\t0.997900\t44.0\tkeep\texperiment 1\n"),
    (exp(2, "discard", 1.0000004, memory_gb=43.96), "0000002\t1.000000\t44.0\tdiscard\texperiment 2\n"),
    (exp(3, "crash", None, memory_gb=12.0), "0000003\t0.000000\t0.0\tcrash\texperiment 3\n"),
    (exp(4, "crash", 0.5, memory_gb=12.0), "0000004\t0.000000\t0.0\tcrash\texperiment 4\n"),
    (exp(5, "keep", 0.9, description="LR\t0.1 ->\n0.2\r\n  why"), "0000005\t0.900000\t0.0\tkeep\tLR 0.1 -> 0.2 why\n"),
    (exp(6, "crash", None, commit=""), "0000000\t0.000000\t0.0\tcrash\texperiment 6\n"),
]


@pytest.mark.parametrize("e,row", ROWS)
def test_tsv_row(e, row):
    assert tsv_row(e) == row


def test_latest_record_wins_and_numbers_never_repeat(tmp_path):
    ledger = Ledger(tmp_path / "t")
    assert ledger.experiments() == [] and ledger.next_number() == 1 and ledger.best() is None
    ledger.append(exp(1))
    ledger.finalize(exp(1, "keep", 1.0))
    ledger.append(exp(2))
    ledger.append(exp(3))
    ledger.finalize(exp(3, "discard", 1.2))
    ledger.finalize(exp(2, "keep", 0.9))
    ledger.append(exp(4))
    ledger.finalize(exp(4, "interrupted"))
    got = [(e.number, e.status, e.metric) for e in ledger.experiments()]
    assert got == [(1, "keep", 1.0), (2, "keep", 0.9), (3, "discard", 1.2), (4, "interrupted", None)]
    assert len(ledger.records()) == 8
    assert ledger.next_number() == 5
    assert ledger.best("lower").number == 2 and ledger.best("higher").number == 1
    # one row per final experiment, in the order each became final; none for the interrupted one
    assert [r.split("\t")[3] for r in ledger.tsv_rows()] == ["keep", "discard", "keep"]
    assert ledger.tsv.read_text().startswith(tsv_header())
    assert ledger.unfinished() == []


def test_finalize_rules(tmp_path):
    ledger = Ledger(tmp_path)
    with pytest.raises(LedgerError, match="not a final state"):
        ledger.finalize(exp(1, "running"))
    ledger.finalize(exp(1, "keep", 1.0))
    with pytest.raises(LedgerError, match="already final"):
        ledger.finalize(exp(1, "discard", 1.0))
    ledger.append(exp(2))
    assert [e.number for e in ledger.unfinished()] == [2]


def test_torn_last_line_is_skipped_and_next_append_starts_fresh(tmp_path, caplog):
    ledger = Ledger(tmp_path)
    ledger.finalize(exp(1, "keep", 1.0))
    with open(ledger.jsonl, "a") as f:
        f.write('{"number": 2, "tag": "t", "descr')  # kill -9 in the middle of a write
    with caplog.at_level(logging.WARNING):
        assert [e.number for e in ledger.experiments()] == [1]
    assert "skipped" in caplog.text
    assert ledger.next_number() == 2
    ledger.append(exp(2))
    ledger.finalize(exp(2, "discard", 1.5))
    lines = ledger.jsonl.read_text().splitlines()
    assert len(lines) == 4 and lines[1].endswith("descr")
    assert [(e.number, e.status) for e in ledger.experiments()] == [(1, "keep"), (2, "discard")]


def test_records_survive_unknown_fields(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.jsonl.write_text('{"number": 1, "tag": "t", "description": "x", "from_the_future": 1}\n')
    assert ledger.experiments()[0].description == "x"


def crash_between_writes(ledger: Ledger, e: Experiment) -> None:
    """The engine died after the jsonl record and before the tsv row."""
    ledger.append(e)


REPAIRS = [
    # name, how results.tsv is damaged (given the path and the good text), rows written by repair
    ("consistent", lambda p, good: None, 0),
    ("missing file", lambda p, good: p.unlink(), 3),
    ("last row lost", lambda p, good: p.write_text("".join(good.splitlines(True)[:-1])), 1),
    ("row doubled", lambda p, good: p.write_text(good + good.splitlines(True)[-1]), 3),
    ("torn row", lambda p, good: p.write_text(good + "0000009\t0.12"), 3),
    ("header only", lambda p, good: p.write_text(tsv_header()), 3),
]


@pytest.mark.parametrize("name,damage,written", REPAIRS, ids=[r[0] for r in REPAIRS])
def test_repair(tmp_path, name, damage, written):
    ledger = Ledger(tmp_path)
    ledger.finalize(exp(1, "keep", 1.0))
    ledger.finalize(exp(2, "crash"))
    ledger.finalize(exp(3, "interrupted"))
    ledger.finalize(exp(4, "discard", 1.1))
    good = ledger.tsv.read_text()
    damage(ledger.tsv, good)
    assert ledger.repair() == written
    assert ledger.tsv.read_text() == good
    assert ledger.repair() == 0


def test_repair_after_crash_between_the_two_writes(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.finalize(exp(1, "keep", 1.0))
    crash_between_writes(ledger, exp(2, "discard", 1.3))
    assert len(ledger.tsv_rows()) == 1
    assert ledger.repair() == 1
    assert [r.split("\t")[3] for r in ledger.tsv_rows()] == ["keep", "discard"]
    # after the repair the next finalize appends as usual
    ledger.finalize(exp(3, "keep", 0.8))
    assert len(ledger.tsv_rows()) == 3 and ledger.repair() == 0
