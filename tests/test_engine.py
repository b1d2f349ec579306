"""The loop end to end with real git and a real subprocess per run, on a stand-in train.py that
trains nothing: its "val_bpb" is its knob X, and MODE makes it crash, hang, fork or tamper."""

import asyncio
import json
import sys
from pathlib import Path

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import FileEdit, Proposal
from nightlab.server.loop.engine import Engine
from nightlab.server.loop.proposals import resolve_command
from nightlab.server.run.summary import crash_summary
from support.agents import Scripted, run_scripted
from support.workspace import STAND_IN, TOML, git, knob, make_workspace, user_state


@pytest.fixture
def ws(tmp_path):
    ws = make_workspace(tmp_path)
    (ws / "notes.txt").write_text("the user's uncommitted edit\n")  # must survive everything
    return ws


def test_keep_discard_crash_and_the_users_tree(ws):
    before = user_state(ws)
    proposals = [
        knob("X", "1.0", "0.5"),
        knob("X", "0.5", "2.0"),
        knob("MODE", '"ok"', '"fail"', "fail"),
        knob("X", "0.5", "0.25"),
    ]
    engine, events = run_scripted(ws, proposals, 5)
    exps = engine.ledger.experiments()
    assert [(e.number, e.status) for e in exps] == [(1, "keep"), (2, "keep"), (3, "discard"), (4, "crash"), (5, "keep")]
    assert exps[0].is_baseline and exps[0].metric == 1.0
    assert exps[2].delta == pytest.approx(1.5) and exps[4].metric == 0.25
    # the branch holds exactly the kept chain; discarded and crashed commits stay under refs
    chain = git(ws, "log", "--format=%s", "nightlab/main").splitlines()
    assert chain[:3] == ["nightlab #5: X 0.5 -> 0.25", "nightlab #2: X 1.0 -> 0.5", "nightlab #1: baseline"]
    refs = git(ws, "for-each-ref", "--format=%(refname)", "refs/nightlab/main").splitlines()
    assert sorted(refs) == sorted(f"refs/nightlab/main/{n}" for n in range(1, 6))
    body = git(ws, "log", "-1", "--format=%B", "refs/nightlab/main/3")
    assert "val_bpb: 2.000000" in body and "verdict: discard" in body and "delta: +1.500000" in body
    assert 'MODE = "fail"' in git(ws, "show", "refs/nightlab/main/4")
    # results.tsv: autoresearch's exact format
    tsv = (ws / ".nightlab/main/results.tsv").read_text().splitlines()
    assert tsv[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    assert tsv[3].split("\t")[1:] == ["2.000000", "2.0", "discard", "X 0.5 -> 2.0"]
    assert tsv[4].split("\t")[1:4] == ["0.000000", "0.0", "crash"]
    assert len(tsv) == 6 and all(len(r.split("\t")[0]) == 7 for r in tsv[1:])
    assert user_state(ws) == before
    kinds = [e["type"] for e in events]
    assert kinds.count("experimentStarted") == 5 and kinds.count("experimentFinished") == 5
    assert events[-1] == {"type": "state", "state": "stopped", "reason": "limit reached"}


@pytest.mark.parametrize("mode,reason", [("nometric", "no"), ("nan", "nan")])
def test_no_metric_or_nan_is_a_crash(ws, mode, reason):
    engine, _ = run_scripted(ws, [knob("MODE", '"ok"', f'"{mode}"')], 2)
    last = engine.ledger.experiments()[-1]
    assert last.status == "crash" and reason in last.decision_reason.lower()


def test_syntax_error_costs_no_training(ws):
    bad = Proposal(description="typo", edits=[FileEdit("train.py", "X = 1.0", "X = = 1.0")])
    engine, _ = run_scripted(ws, [bad], 2)
    last = engine.ledger.experiments()[-1]
    assert last.status == "crash" and "does not compile" in last.decision_reason
    assert "train.py:2" in last.error
    assert not (ws / ".nightlab/runs/main/2").exists()  # the runner never started
    assert git(ws, "rev-parse", "nightlab/main") == engine.ledger.experiments()[0].commit


def test_edit_to_protected_file_is_rejected(ws):
    sneaky = Proposal(description="tweak the harness", edits=[FileEdit("prepare.py", "# the fixed", "# my")])
    engine, _ = run_scripted(ws, [sneaky], 2)
    last = engine.ledger.experiments()[-1]
    assert last.status == "crash" and "protected" in last.decision_reason
    assert not (ws / ".nightlab/runs/main/2").exists()


def test_run_that_changes_a_protected_file_is_invalid(ws):
    engine, _ = run_scripted(ws, [knob("MODE", '"ok"', '"tamper"')], 2)
    last = engine.ledger.experiments()[-1]
    assert last.status == "crash" and "prepare.py" in last.decision_reason
    assert (engine.store.workdir / "prepare.py").read_text() == "# the fixed harness\n"  # reset with the branch


def test_hanging_run_is_killed_with_its_children(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # TMPDIR is allow-listed: the child's pid lands here
    (ws / "nightlab.toml").write_text(TOML.format(timeout=3))
    engine, _ = run_scripted(ws, [knob("MODE", '"ok"', '"hang"')], 2)
    last = engine.ledger.experiments()[-1]
    assert last.status == "crash" and last.run_status == "timeout"
    assert "deadline" in last.decision_reason and last.timings["total_s"] < 15
    pid = int((tmp_path / "child.pid").read_text())
    alive = Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    assert not alive, "the forked child survived the kill"


def test_no_secrets_reach_the_training_process(ws, monkeypatch, tmp_path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp")
    monkeypatch.setenv("MY_SECRET_THING", "x")
    monkeypatch.setenv("OPENAI_KEY", "x")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    engine, _ = run_scripted(ws, [knob("MODE", '"ok"', '"envdump"')], 2)
    assert engine.ledger.experiments()[-1].status in ("keep", "discard")
    env = json.loads((tmp_path / "env.json").read_text())
    leaked = [k for k in env if any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET"))]
    assert leaked in ([], ["NIGHTLAB_BUDGET_TOKENS"])
    assert env["NIGHTLAB_SEED"] == "0" and env["NIGHTLAB_BUDGET_SECONDS"] in ("1", "1.0")


def test_agent_sees_history(ws):
    agent = Scripted([knob("X", "1.0", "0.5"), knob("X", "0.5", "0.7")])
    settings = load_settings(ws, {"max_experiments": 3})
    asyncio.run(Engine(settings, agent=agent).run())
    first, drafted = agent.contexts
    assert [h.status for h in first.history] == ["baseline"] and first.best == 1.0 and not first.in_flight
    # the next proposal is drafted while #2 trains: #2 is in flight, not in the history
    assert [h.status for h in drafted.history] == ["baseline"] and drafted.in_flight == ["X 1.0 -> 0.5"]
    assert "X = 1.0" in drafted.files["train.py"]


@pytest.mark.parametrize(
    "command,expected", [("python train.py", f"{sys.executable} train.py"), ("uv run train.py", "uv run train.py")]
)
def test_resolve_command(command, expected):
    assert resolve_command(command) == expected


@pytest.mark.parametrize(
    "error,expected",
    [
        (
            "exit code 1\nTraceback (most recent call last):\n  File x\nValueError: bad shape",
            "exit code 1: ValueError: bad shape",
        ),
        ("FAIL printed", "FAIL printed"),
        ("", "crashed"),
    ],
)
def test_crash_summary(error, expected):
    assert crash_summary(error) == expected


def test_uncommitted_workspace_is_a_clear_error(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "README").write_text("x")
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")
    (ws / "train.py").write_text(STAND_IN)
    (ws / "prepare.py").write_text("#\n")
    (ws / "nightlab.toml").write_text(TOML.format(timeout=20))
    engine, events = run_scripted(ws, [], 1)
    assert engine.state == "errored"
    assert "not committed" in events[-1]["reason"] and engine.ledger.experiments() == []


def test_a_stop_while_a_second_slot_waits_for_the_baseline_ends_the_loop(tmp_path):
    """Two slots: one trains the baseline, the other waits for it (nothing to propose against yet). A stop
    wakes the waiter for good; it must end, not spin on the set event and starve the loop (which then
    never answered the stop: seen with the Ray executor's elastic slots)."""
    ws = make_workspace(tmp_path, STAND_IN.replace('MODE = "ok" ', 'MODE = "slow"'))
    engine = Engine(load_settings(ws, {"slots": 2, "max_experiments": 4}))

    async def main():
        run = asyncio.create_task(engine.run())
        for _ in range(600):  # the baseline started
            if engine.running():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the second slot is waiting for it by now
        engine.stop()
        await asyncio.wait_for(run, 60)

    asyncio.run(main())
    exps = engine.ledger.experiments()
    assert engine.state == "stopped" and [(e.number, str(e.status)) for e in exps] == [(1, "interrupted")], exps
