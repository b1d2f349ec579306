"""The loop follows the user's code (loop/lineage.py): a crashed baseline and a committed fix, new
commits after a session (a new lineage from the user's HEAD, the old one kept and viewable),
`--continue`, and uncommitted edits named. Real git, the stand-in train.py, real subprocesses."""

import json
import os
import subprocess
import sys

from nightlab.server.core.types import Experiment, ExperimentKind
from nightlab.server.record.ledger import Ledger
from support.agents import messages, run_scripted
from support.workspace import STAND_IN, git, knob, make_workspace

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]


def commit(ws, message, **files):
    for name, text in files.items():
        (ws / name).write_text(text)
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", message)
    return git(ws, "rev-parse", "HEAD")


def cli(ws, *args):
    return subprocess.run([*NIGHTLAB, *args], cwd=ws, capture_output=True, text=True, timeout=120, env=os.environ)


def test_a_crashed_baseline_then_a_committed_fix_runs_the_fixed_baseline(tmp_path):
    """Bug: after the fix was committed, `nightlab run` said "the baseline crashed" again at once."""
    ws = make_workspace(tmp_path, STAND_IN.replace('MODE = "ok"', 'MODE = "fail"'))
    first = cli(ws, "run", "--plain", "--max-experiments", "2")
    assert first.returncode == 1 and "baseline (experiment 1, your unchanged code) crashed" in first.stdout
    fixed = commit(ws, "fix", **{"train.py": STAND_IN})
    second = cli(ws, "run", "--plain", "--max-experiments", "1")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "lineage 2 starts from your HEAD, with a new baseline" in second.stdout, second.stdout
    exps = Ledger(ws / ".nightlab" / "main").experiments()
    assert [(e.number, e.kind, e.status, e.lineage) for e in exps] == [
        (1, ExperimentKind.BASELINE, "crash", 1),
        (2, ExperimentKind.BASELINE, "keep", 2),
    ]
    assert exps[1].parent_commit == fixed and exps[1].metric == 1.0
    assert git(ws, "rev-parse", "nightlab/main^") == fixed  # the branch follows the user's commit
    results = cli(ws, "results").stdout  # the old lineage stays viewable
    assert "crash" in results and "keep" in results
    assert "#2" in cli(ws, "status").stdout
    assert "fix it and commit, then run again" in first.stdout  # the message says what works


def test_new_commits_after_a_session_start_a_new_lineage_and_the_old_one_stays(tmp_path):
    ws = make_workspace(tmp_path)
    engine, _ = run_loop(ws, [knob("X", "1.0", "0.5")], 2)
    old_head = engine.store.head()
    assert [e.status for e in engine.ledger.experiments()] == ["keep", "keep"]
    # the user commits code of their own, worse than the old lineage's best: a new baseline all the same
    mine = commit(ws, "my change", **{"train.py": STAND_IN.replace("X = 1.0", "X = 2.0")})
    engine, said = run_loop(ws, [knob("X", "2.0", "1.5")], 2)
    assert any("your HEAD moved on" in m and "lineage 2 starts from your HEAD" in m for m in said), said
    assert any("refs/nightlab/main/lineage-1" in m and "--continue" in m for m in said), said
    exps = engine.ledger.experiments()
    assert [(e.number, e.is_baseline, e.status, e.lineage) for e in exps] == [
        (1, True, "keep", 1),
        (2, False, "keep", 1),
        (3, True, "keep", 2),
        (4, False, "keep", 2),
    ]
    assert exps[2].parent_commit == mine and exps[2].metric == 2.0 and exps[3].metric == 1.5
    assert exps[3].best_before == 2.0  # judged against this lineage's best, not the old 0.5
    assert engine.ledger.best("lower").number == 4 and engine.best_values() == [1.5]
    # the old chain and every experiment's ref stay viewable
    assert git(ws, "rev-parse", "refs/nightlab/main/lineage-1") == old_head
    assert "X = 0.5" in git(ws, "show", "refs/nightlab/main/lineage-1:train.py")
    assert all(git(ws, "rev-parse", f"refs/nightlab/main/{n}") for n in (1, 2, 3, 4))
    state = json.loads((ws / ".nightlab/main/lineage.json").read_text())
    assert state["lineage"] == 2 and state["origin"] == mine and state["earlier"][0]["head"] == old_head
    # no new commit: the next start goes on with lineage 2, saying nothing of lineages
    engine, said = run_loop(ws, [knob("X", "1.5", "1.25")], 1)
    assert not any("lineage" in m for m in said), said
    last = engine.ledger.experiments()[-1]
    assert (last.number, last.is_baseline, last.lineage, last.status) == (5, False, 2, "keep")


def test_continue_keeps_the_old_lineage(tmp_path):
    ws = make_workspace(tmp_path)
    engine, _ = run_loop(ws, [knob("X", "1.0", "0.5")], 2)
    old_head = engine.store.head()
    commit(ws, "my change", **{"notes.txt": "changed\n"})
    engine, said = run_loop(ws, [knob("X", "0.5", "0.25")], 1, continue_lineage=True)
    assert any("continuing lineage 1 as asked" in m for m in said), said
    last = engine.ledger.experiments()[-1]
    assert (last.number, last.is_baseline, last.lineage, last.status, last.parent_commit) == (
        3,
        False,
        1,
        "keep",
        old_head,
    )
    assert git(ws, "show", "nightlab/main:notes.txt") == "the user's own file"  # not the new commit's
    assert not git(ws, "for-each-ref", "refs/nightlab/main/lineage-*")


def test_uncommitted_edits_to_the_workspace_files_are_named(tmp_path):
    ws = make_workspace(tmp_path)
    (ws / "train.py").write_text(STAND_IN.replace("X = 1.0", "X = 0.1"))  # edited, not committed
    engine, said = run_loop(ws, [], 1)
    assert any(m.startswith("train.py has uncommitted changes: the loop runs your last commit") for m in said), said
    assert engine.ledger.experiments()[0].metric == 1.0  # the commit ran, as said
    assert (ws / "train.py").read_text() == STAND_IN.replace("X = 1.0", "X = 0.1")  # and the edit is the user's


def test_a_kill_between_the_steps_of_a_new_lineage_is_finished_on_the_next_start(tmp_path):
    """lineage.json is written first: a start that finds it ahead of the refs and the branch completes them."""
    ws = make_workspace(tmp_path)
    engine, _ = run_loop(ws, [knob("X", "1.0", "0.5")], 2)
    old_head = engine.store.head()
    mine = commit(ws, "my change", **{"train.py": STAND_IN.replace("X = 1.0", "X = 2.0")})
    state = {"lineage": 2, "origin": mine, "started_at": "", "earlier": []}
    state["earlier"] = [{"lineage": 1, "origin": "", "head": old_head, "ref": "refs/nightlab/main/lineage-1"}]
    (ws / ".nightlab/main/lineage.json").write_text(json.dumps(state))  # as if killed right after writing it
    engine, said = run_loop(ws, [], 1)
    assert git(ws, "rev-parse", "refs/nightlab/main/lineage-1") == old_head
    last = engine.ledger.experiments()[-1]
    assert (last.is_baseline, last.lineage, last.parent_commit, last.metric) == (True, 2, mine, 2.0)


def test_best_and_records_of_an_older_ledger():
    """A record without a lineage (older code) is of the first; the best counts the current lineage only."""
    old = Experiment.from_json({"number": 1, "tag": "main", "description": "baseline", "status": "keep", "metric": 1.0})
    assert old.lineage == 1 and Experiment.from_json(old.to_json()).lineage == 1
    assert "lineage" in old.to_json()  # and older code drops the key it does not know (from_json's filter)


def run_loop(ws, proposals, n, **overrides):
    engine, events = run_scripted(ws, proposals, n, **overrides)
    return engine, messages(events)
