"""Verdicts that never mix conditions (issue 11, item 4; loop/conditions.py, loop/lineage.py): every
experiment records its budget, device class and protected files' hash; a start under another budget
starts a new lineage with a new baseline and says so, its candidates judged against that baseline;
the same budget again goes on. Real git, a stand-in train.py whose metric depends on the budget."""

import json
import os
import subprocess
import sys

from nightlab.protocol.convert import experiment_payload
from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import Experiment, ExperimentKind
from nightlab.server.loop import conditions
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Store
from nightlab.server.run.slots import SlotSpec
from support.agents import messages, run_scripted
from support.workspace import STAND_IN, git, knob, make_workspace

# At a token budget the stand-in reports 0.3 * X: the same code measures differently under each budget.
BUDGETED = STAND_IN.replace(
    'value = float("nan") if MODE == "nan" else X',
    'value = X * (0.3 if os.environ.get("NIGHTLAB_BUDGET_TOKENS") else 1.0)',
)
FIELDS = ("budget_mode", "budget_amount", "device", "protected_hash")


def cli(ws, *args):
    cmd = [sys.executable, "-m", "nightlab.server.cli", *args]
    return subprocess.run(cmd, cwd=ws, capture_output=True, text=True, timeout=120, env=os.environ)


def test_a_token_budget_after_a_time_budget_starts_a_new_baseline_and_judges_against_it(tmp_path):
    """Bug: a baseline measured at a time budget was reused for experiments at a token budget."""
    ws = make_workspace(tmp_path, BUDGETED)
    origin = git(ws, "rev-parse", "HEAD")
    engine, _ = run_loop(ws, [knob("X", "1.0", "0.5")], 2)  # [budget] seconds = 1
    old_head = engine.store.head()
    assert [(e.metric, e.budget_mode, e.budget_amount) for e in engine.ledger.experiments()] == [
        (1.0, "time", 1.0),
        (0.5, "time", 1.0),
    ]
    run = cli(ws, "run", "--plain", "--max-experiments", "1", "--budget-tokens", "40960")
    assert run.returncode == 0, run.stdout + run.stderr
    out = " ".join(run.stdout.split())
    assert "the budget changed (1 s of training time -> 40,960 tokens)" in out, out
    assert "lineage 2 starts again from" in out and "with a new baseline" in out, out
    assert "refs/nightlab/main/lineage-1" in out, out
    third = Ledger(ws / ".nightlab" / "main").experiments()[-1]
    assert (third.number, third.kind, third.lineage, third.metric) == (3, ExperimentKind.BASELINE, 2, 0.3)
    assert (third.budget_mode, third.budget_amount, third.parent_commit) == ("tokens", 40960.0, origin)
    assert git(ws, "rev-parse", "refs/nightlab/main/lineage-1") == old_head  # the old chain stays
    state = json.loads((ws / ".nightlab/main/lineage.json").read_text())
    assert state["lineage"] == 2 and "budget changed" in state["reason"]
    # the same budget again: lineage 2 goes on, the candidate judged against its baseline (0.3), not 0.5
    engine, said = run_loop(ws, [knob("X", "1.0", "0.8")], 1, budget_tokens=40960)
    assert not any("lineage" in m for m in said), said
    last = engine.ledger.experiments()[-1]
    assert (last.number, last.kind, last.lineage, last.budget_mode) == (4, ExperimentKind.CHANGE, 2, "tokens")
    assert abs(last.metric - 0.24) < 1e-9 and last.best_before == 0.3, (last.metric, last.best_before)
    assert engine.ledger.best("lower").number == 4


def test_the_conditions_are_recorded_and_round_trip(tmp_path):
    exp = Experiment(1, "t", "d", budget_mode="tokens", budget_amount=40960.0, device="cuda:H200", protected_hash="ab")
    ledger = Ledger(tmp_path / "l")
    ledger.append(exp)
    back = Ledger(tmp_path / "l").get(1)
    assert back is not None and back.to_json() == exp.to_json()
    assert [getattr(back, f) for f in FIELDS] == ["tokens", 40960.0, "cuda:H200", "ab"]
    wire = experiment_payload(back.to_json())  # what the editors' table and panel get
    assert (wire.lineage, wire.budget_mode, wire.budget_amount, wire.device) == (1, "tokens", 40960.0, "cuda:H200")
    old = Experiment.from_json({"number": 2, "tag": "t", "description": "before conditions", "status": "keep"})
    assert [getattr(old, f) for f in FIELDS] == ["", None, "", ""]  # an older record reads, unknown
    ws = make_workspace(tmp_path, BUDGETED)
    engine, _ = run_loop(ws, [knob("X", "1.0", "0.5")], 2)
    recorded = [[getattr(e, f) for f in FIELDS] for e in engine.ledger.records()]
    assert len(recorded) == 4 and all(r[:3] == ["time", 1.0, "cpu"] for r in recorded), recorded
    assert len({r[3] for r in recorded}) == 1 and len(recorded[0][3]) == 16
    store = Store(ws, "main")
    settings = load_settings(ws)
    assert conditions.protected_hash(settings, store, "HEAD") == recorded[0][3]
    (ws / "prepare.py").write_text("# another harness\n")
    assert conditions.protected_hash(settings, store, "HEAD") == recorded[0][3]  # the commit's, not the disk's


def test_records_without_conditions_start_a_new_baseline(tmp_path):
    """A ledger written before the conditions were recorded: its budget is unknown, so it is not reused."""
    ws = make_workspace(tmp_path, BUDGETED)
    run_loop(ws, [knob("X", "1.0", "0.5")], 2)
    jsonl = ws / ".nightlab/main/experiments.jsonl"
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # as that version wrote them: without the conditions, and before records were sealed (no seal, no key)
    gone = (*FIELDS, "seal")
    jsonl.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in gone}) + "\n" for r in lines))
    (ws / ".nightlab/main/ledger.key").unlink()
    engine, said = run_loop(ws, [], 1)
    assert any("do not record their budget" in m and "lineage 2 starts again" in m for m in said), said
    last = engine.ledger.experiments()[-1]
    assert (last.number, last.kind, last.lineage, last.budget_mode) == (3, ExperimentKind.BASELINE, 2, "time")


def test_another_device_class_is_another_condition(tmp_path):
    ws = make_workspace(tmp_path)
    ledger = Ledger(ws / ".nightlab" / "main")
    settings, store = load_settings(ws), Store(ws, "main")
    store.open_or_create()
    exp = Experiment(1, "main", "baseline", budget_mode="time", budget_amount=1.0, device="cpu", status="keep")
    ledger.append(exp)
    assert conditions.changed(settings, store, ledger, [SlotSpec("cpu0", "", None)]) == ""
    why = conditions.changed(settings, store, ledger, [SlotSpec("gpu0", "0", None)])
    assert why.startswith("the device changed (cpu -> "), why
    assert "budget changed" in conditions.changed(load_settings(ws, {"budget_tokens": 4096}), store, ledger, [])


def run_loop(ws, proposals, n, **overrides):
    engine, events = run_scripted(ws, proposals, n, **overrides)
    return engine, messages(events)
