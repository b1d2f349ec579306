"""A ledger written by the landed version before the typed records (commit 2bdfaea, fixture in
tests/fixtures/ledger-2bdfaea/, with what that version's own Ledger read from it in expected.json) is
read unchanged by this one: same experiments, same best, same next number, results.tsv agrees."""

import json
import shutil
from pathlib import Path

import pytest

from nightlab.server.core.types import ExperimentKind, ExperimentStatus, Review
from nightlab.server.record.ledger import Ledger

FIXTURE = Path(__file__).parent / "fixtures" / "ledger-2bdfaea"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    for name in ("experiments.jsonl", "results.tsv"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    return Ledger(tmp_path)


def view(e) -> dict:
    """An experiment in the terms expected.json was written in."""
    return {
        "number": e.number,
        "status": str(e.status),
        "run_status": str(e.run_status),
        "metric": e.metric,
        "description": e.description,
        "commit": e.commit,
        "baseline": e.is_baseline,
        "rerun_of": e.rerun_of,
        "review": str(e.review) if e.review else None,
        "review_note": e.review_note,
        "slot": e.slot,
        "runs": e.runs,
        "rebased": e.rebased,
        "decision": e.decision,
    }


def test_same_experiments_best_and_numbering(ledger):
    assert [view(e) for e in ledger.experiments()] == EXPECTED["experiments"]
    best = ledger.best("lower")
    assert best is not None and best.number == EXPECTED["best"]
    assert ledger.next_number() == EXPECTED["next_number"]
    assert ledger.tsv_rows() == EXPECTED["tsv_rows"] and ledger.repair() == 0


def test_old_meta_keys_become_typed_fields(ledger):
    exps = {e.number: e for e in ledger.experiments()}
    assert exps[1].kind is ExperimentKind.BASELINE and exps[1].runs == [1.0, 1.0, 1.0]
    assert exps[2].review is Review.ACCEPTED and exps[2].review_note == "looks right"
    assert exps[7].rerun_of == 6 and exps[6].status is ExperimentStatus.INTERRUPTED
    for e in exps.values():  # what stays in meta is the agent's own: no engine key is left there
        assert not {"baseline", "rerun_of", "runs", "slot", "review", "edits", "decision"} & set(e.meta)


def test_a_record_written_now_reads_back_the_same(ledger, tmp_path):
    again = Ledger(tmp_path / "again")
    for e in ledger.experiments():
        again.append(e)
    assert [view(e) for e in again.experiments()] == [view(e) for e in ledger.experiments()]
    line = json.loads((tmp_path / "again" / "experiments.jsonl").read_text().splitlines()[0])
    assert line["kind"] == "baseline" and line["status"] == "keep" and "baseline" not in line["meta"]
