"""Only the loop's records count (issue 11, item 3). Each attack seen on the landed ledger is a test: a
forged keep for the running number (the loop died with "experiment 2 is already final", and after a
restart the forged record stayed the best), a forged future record (it became the best and shifted the
numbering), a copied seal, a replayed line, results.tsv forged, the key replaced or deleted, and a
forgery sealed with the key itself (training with the sandbox off can read it: the live check voids it).
Old ledgers, from before the seal, still read."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
from pathlib import Path

import pytest

from nightlab.server.core.types import Experiment, LoopState
from nightlab.server.record import seal
from nightlab.server.record.ledger import Ledger, LedgerError
from support.agents import messages, run_scripted
from support.workspace import STAND_IN, knob, make_workspace

FIXTURE = Path(__file__).parent / "fixtures" / "ledger-2bdfaea"


def exp(number: int, status: str = "running", metric: float | None = None, **kw) -> Experiment:
    kw.setdefault("commit", f"{number:07d}abcdef")
    kw.setdefault("description", f"experiment {number}")
    return Experiment(number=number, tag="t", status=status, metric=metric, **kw)


def opened(folder: Path) -> tuple[Ledger, list[str]]:
    """The loop's ledger (open(): key held, live check on) and what it told the person."""
    ledger, said = Ledger(folder), []
    ledger.on_problem = said.append
    ledger.open()
    return ledger, said


def reader(folder: Path) -> tuple[Ledger, list[str]]:
    ledger, said = Ledger(folder), []
    ledger.on_problem = said.append
    return ledger, said


def forge_line(folder: Path, rec: dict, key: bool = False, seq: int | None = None) -> None:
    """What a train.py running as the user can do: append a line, sealed with the key file if it can read it."""
    rec = {k: v for k, v in rec.items() if k != "seal"}
    if key:
        data = json.loads((folder / seal.KEY_NAME).read_text())
        lines = [json.loads(x) for x in (folder / "experiments.jsonl").read_text().splitlines() if x.strip()]
        n = seq if seq is not None else max(r.get("seal", {}).get("n", 0) for r in lines) + 1
        body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        rec["seal"] = {
            "n": n,
            "mac": hmac.new(bytes.fromhex(data["key"]), f"{n}\n".encode() + body, hashlib.sha256).hexdigest(),
        }
    with open(folder / "experiments.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def state(ledger: Ledger) -> list[tuple]:
    return [(e.number, str(e.status), e.metric) for e in ledger.experiments()]


def baseline_and_running(folder: Path) -> tuple[Ledger, list[str]]:
    ledger, said = opened(folder)
    ledger.append(exp(1))
    ledger.finalize(exp(1, "keep", 1.0))
    ledger.append(exp(2))
    return ledger, said


# ------------------------------------------------------------------------------------------------- attacks


def test_a_forged_keep_for_the_running_number_is_ignored_and_the_loop_goes_on(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    forge_line(tmp_path, exp(2, "keep", 0.001).to_json())
    ledger.finalize(exp(2, "discard", 1.5))  # the landed code: LedgerError "experiment 2 is already final"
    assert state(ledger) == [(1, "keep", 1.0), (2, "discard", 1.5)]
    assert ledger.best().number == 1 and ledger.next_number() == 3
    assert any("changed while #2 trained: 1 record the loop did not write, ignored" in m for m in said), said
    assert any("line 4: experiment 2, 'keep 0.001'" in m for m in said), said
    again, told = reader(tmp_path)  # after a restart: still the loop's records only
    assert state(again) == state(ledger) and again.best().number == 1
    assert told == ["experiments.jsonl line 4: a record the loop did not write (experiment 2, 'keep 0.001'): ignored"]
    assert again.expected_rows() == ledger.tsv_rows()


def test_a_forged_future_record_neither_wins_nor_shifts_the_numbering(tmp_path):
    ledger, _ = baseline_and_running(tmp_path)
    forge_line(tmp_path, exp(7, "keep", 0.001).to_json())
    again, told = reader(tmp_path)
    assert again.best().number == 1 and again.next_number() == 3 and [e.number for e in again.experiments()] == [1, 2]
    assert told == ["experiments.jsonl line 4: a record the loop did not write (experiment 7, 'keep 0.001'): ignored"]


def test_a_future_record_sealed_with_the_leaked_key_is_still_refused(tmp_path):
    """With the sandbox off training can read the key; if the loop died before its live check saw the
    line, the rules still hold: no number may jump ahead."""
    baseline_and_running(tmp_path)
    forge_line(tmp_path, exp(7, "keep", 0.001).to_json(), key=True)
    again, told = reader(tmp_path)
    assert again.next_number() == 3 and again.best().number == 1
    assert told and "a number from the future (the next is 3)" in told[0], told


def test_a_copied_seal_does_not_vouch_for_another_record(tmp_path):
    ledger, _ = baseline_and_running(tmp_path)
    kept = json.loads(ledger.jsonl.read_text().splitlines()[1])  # the baseline's keep, sealed
    forged = {**exp(2, "keep", 0.001).to_json(), "seal": kept["seal"]}
    with open(ledger.jsonl, "a") as f:
        f.write(json.dumps(forged) + "\n")
    again, told = reader(tmp_path)
    assert state(again) == [(1, "keep", 1.0), (2, "running", None)]
    assert told and "its seal does not match it" in told[0], told


def test_a_replayed_line_is_refused(tmp_path):
    """An earlier sealed line copied to the end (here #2's 'running' after its verdict) would make #2
    unfinished again: recovery would re-run it."""
    ledger, _ = baseline_and_running(tmp_path)
    ledger.finalize(exp(2, "discard", 1.5))
    running_line = ledger.jsonl.read_text().splitlines()[2]
    with open(ledger.jsonl, "a") as f:
        f.write(running_line + "\n")
    again, told = reader(tmp_path)
    assert again.unfinished() == [] and state(again)[-1] == (2, "discard", 1.5)
    assert told and "a copy of an earlier sealed record" in told[0], told


def test_a_second_verdict_sealed_with_the_leaked_key_is_refused(tmp_path):
    ledger, _ = baseline_and_running(tmp_path)
    ledger.finalize(exp(2, "discard", 1.5))
    forge_line(tmp_path, exp(2, "keep", 0.001).to_json(), key=True)
    again, told = reader(tmp_path)
    assert state(again)[-1] == (2, "discard", 1.5) and again.best().number == 1
    assert told and "a second verdict for an experiment already discard" in told[0], told


def test_a_forgery_sealed_with_the_key_during_the_run_is_voided_by_the_live_check(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    forge_line(tmp_path, exp(2, "keep", 0.001).to_json(), key=True)  # it verifies: the key was readable
    ledger.finalize(exp(2, "discard", 1.5))
    assert any("changed while #2 trained: 1 record the loop did not write" in m for m in said), said
    again, told = reader(tmp_path)  # the void record keeps it out for every later reader
    assert state(again) == [(1, "keep", 1.0), (2, "discard", 1.5)] and again.best().number == 1
    assert told and "written behind the loop's back" in told[0], told


def test_a_void_forged_with_the_key_cannot_void_the_loops_records(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    forge_line(tmp_path, {"void": [[0, 10_000]], "reason": "forged"}, key=True)
    ledger.finalize(exp(2, "discard", 1.5))
    again, _ = reader(tmp_path)
    assert state(again) == [(1, "keep", 1.0), (2, "discard", 1.5)]


def test_the_persons_review_from_the_editor_is_not_a_forgery(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    editor = Ledger(tmp_path)  # the language server's own ledger, in another process
    first = editor.get(1)
    first.review, first.review_note = "accepted", "looks right"
    editor.append(first)
    ledger.finalize(exp(2, "discard", 1.5))
    assert not [m for m in said if "did not write" in m], said
    assert str(Ledger(tmp_path).get(1).review) == "accepted"


def test_results_tsv_forged_is_restored_from_the_sealed_jsonl(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    forge_line(tmp_path, exp(2, "keep", 0.001).to_json())
    with open(ledger.tsv, "a") as f:
        f.write("0000002\t0.001000\t0.0\tkeep\texperiment 2\n")
    fresh = Ledger(tmp_path)
    assert fresh.repair() == 1  # the landed code kept the forged row: the forged jsonl record backed it
    assert "0.001000" not in ledger.tsv.read_text()
    with open(ledger.tsv, "a") as f:  # forged during the session: the next verdict puts it right at once
        f.write("0000002\t0.001000\t0.0\tkeep\texperiment 2\n")
    ledger.finalize(exp(2, "discard", 1.5))
    assert ledger.tsv_rows() == ledger.expected_rows() and "0.001000" not in ledger.tsv.read_text()
    assert any("results.tsv has rows the loop did not write" in m for m in said), said


def test_a_rewritten_ledger_stops_the_loop_with_words(tmp_path):
    ledger, _ = baseline_and_running(tmp_path)
    text = ledger.jsonl.read_text()
    ledger.jsonl.write_text(text.replace('"metric":1.0', '"metric":0.5'))
    with pytest.raises(LedgerError, match="changed behind the loop's back while #2 trained"):
        ledger.finalize(exp(2, "discard", 1.5))


# ------------------------------------------------------------------------------------------------- the key


def test_a_key_deleted_or_replaced_during_the_session_is_put_back(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    key = tmp_path / seal.KEY_NAME
    original = key.read_text()
    key.unlink()
    ledger.finalize(exp(2, "discard", 1.5))
    assert key.read_text() == original and any("was changed or deleted behind the loop's back" in m for m in said)
    key.write_text(seal.new_key(0).to_text())
    ledger.append(exp(3))
    assert key.read_text() == original
    assert [e.number for e in Ledger(tmp_path).experiments()] == [1, 2, 3]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_start_whose_key_does_not_match_the_history_is_refused(tmp_path, how):
    ledger, _ = baseline_and_running(tmp_path)
    key = tmp_path / seal.KEY_NAME
    if how == "deleted":
        key.unlink()
    else:
        key.write_text(seal.new_key(0).to_text())
    with pytest.raises(LedgerError, match="is missing" if how == "deleted" else "is not the key"):
        Ledger(tmp_path).open()
    with pytest.raises(LedgerError):  # and nothing is appended with a key that would orphan the history
        Ledger(tmp_path).append(exp(3)) if how == "deleted" else Ledger(tmp_path).open()


def test_an_old_ledger_reads_as_before_and_new_records_are_sealed(tmp_path):
    for name in ("experiments.jsonl", "results.tsv"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    expected = json.loads((FIXTURE / "expected.json").read_text())
    ledger, said = opened(tmp_path)
    assert [e.number for e in ledger.experiments()] == [e["number"] for e in expected["experiments"]]
    n = ledger.next_number()
    assert (
        n == expected["next_number"] and seal.read_key(tmp_path).since == (FIXTURE / "experiments.jsonl").stat().st_size
    )
    ledger.append(exp(n))
    last = json.loads(ledger.jsonl.read_text().splitlines()[-1])
    assert last["seal"]["n"] == 1
    forge_line(tmp_path, exp(n + 1, "keep", 0.001).to_json())  # after the key: unsealed is not legacy
    again, told = reader(tmp_path)
    assert again.next_number() == n + 1 and again.best().number == expected["best"] and len(told) == 1
    assert said == []


def test_a_torn_line_is_reported_once_and_never_counted(tmp_path):
    ledger, said = baseline_and_running(tmp_path)
    with open(ledger.jsonl, "a") as f:
        f.write('{"number": 2, "status": "keep", "metr')
    ledger.finalize(exp(2, "discard", 1.5))
    for _ in range(3):
        ledger.experiments()
    again, told = reader(tmp_path)
    again.experiments(), again.best()
    assert state(again)[-1] == (2, "discard", 1.5)
    assert told == ["experiments.jsonl line 4: a torn or unreadable line: ignored"]


# ------------------------------------------------------------------------------------------------- a real loop

FORGER = """import hashlib, hmac, json, os
LEDGER = {ledger!r}
def forge(number_offset, with_key):
    lines = [json.loads(x) for x in open(LEDGER) if x.strip()]
    me = [r for r in lines if r.get("status") == "running"][-1]
    rec = dict(me, number=me["number"] + number_offset, status="keep", metric=0.001, run_status="ok")
    rec.pop("seal", None)
    if with_key:
        key = json.load(open(os.path.join(os.path.dirname(LEDGER), "ledger.key")))
        n = max(r.get("seal", {{}}).get("n", 0) for r in lines) + 1
        body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        mac = hmac.new(bytes.fromhex(key["key"]), f"{{n}}\\n".encode() + body, hashlib.sha256).hexdigest()
        rec["seal"] = {{"n": n, "mac": mac}}
    open(LEDGER, "a").write(json.dumps(rec) + "\\n")
"""


@pytest.mark.parametrize("offset,with_key", [(0, False), (0, True), (5, False)], ids=["own", "own-key", "future"])
def test_a_train_py_forging_the_ledger_under_a_real_loop(tmp_path, offset, with_key):
    """The attack as it was run (sandbox off, so train.py runs as the user): its keep 0.001 for its own
    number (or a future one) is reported, ignored, and the loop records its real, worse result."""
    ledger_path = tmp_path / "ws" / ".nightlab" / "main" / "experiments.jsonl"
    train = FORGER.format(ledger=str(ledger_path)) + STAND_IN.replace(
        'value = float("nan")', f'if X != 1.0:\n    forge({offset}, {with_key})\nvalue = float("nan")'
    )
    ws = make_workspace(tmp_path, train)
    engine, events = run_scripted(ws, [knob("X", "1.0", "1.5"), knob("X", "1.0", "1.2")], 3)
    said = messages(events)
    assert engine.state == LoopState.STOPPED, [e for e in events if e["type"] == "state"][-1]
    got = [(e.number, str(e.status)) for e in Ledger(ws / ".nightlab" / "main").experiments()]
    assert got == [(1, "keep"), (2, "discard"), (3, "discard")], got
    assert engine.ledger.best().number == 1
    assert any("the loop did not write, ignored" in m and "'keep 0.001'" in m for m in said), said
