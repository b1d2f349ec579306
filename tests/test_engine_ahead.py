"""The engine's issue-4 behaviours on the stand-in trainer: propose-ahead (and re-basing a draft),
repeats and confirmation runs for the noise policy, the smoke stage, the cost cap, feedback to an LLM
agent whose edit did not apply, and an invalid proposal recorded without stopping the loop."""

import asyncio

import pytest

from nightlab.server.agents.base import ProposalError
from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import FileEdit, Proposal
from nightlab.server.loop.engine import Engine
from support.workspace import STAND_IN, knob, make_workspace, merge_toml

# the metric is X plus a deterministic per-seed wobble of at most +-0.01: run-to-run "noise"
NOISY = STAND_IN.replace(
    'value = float("nan") if MODE == "nan" else X',
    'seed = int(os.environ.get("NIGHTLAB_SEED", "0"))\n'
    'value = float("nan") if MODE == "nan" else X + 0.01 * (((seed * 7919) % 13) - 6) / 6',
)


class Agent:
    """Scripted proposals; remembers, for every call, whether an experiment was training and the context."""

    def __init__(self, engine_ref, proposals, name="scripted", delay=0.0):
        self.engine_ref, self.proposals, self.name, self.delay = engine_ref, list(proposals), name, delay
        self.accepts_feedback = name == "claude"  # an LLM agent gets one retry when its edit does not apply
        self.calls = []

    async def propose(self, ctx):
        engine = self.engine_ref[0]
        self.calls.append({"training": bool(engine.running()), "ctx": ctx})
        await asyncio.sleep(self.delay)
        item = self.proposals.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


def run(ws, proposals, n, toml_extra="", name="scripted", **overrides):
    if toml_extra:
        (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), toml_extra))
        import subprocess

        subprocess.run(["git", "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "settings"], cwd=ws)
    ref = [None]
    agent = Agent(ref, proposals, name=name)
    engine = Engine(load_settings(ws, {"max_experiments": n, **overrides}), agent=agent)
    ref[0] = engine
    events = []
    engine.subscribe(events.append)
    asyncio.run(engine.run())
    return engine, agent, events


def statuses(engine):
    return [(e.number, e.status) for e in engine.ledger.experiments()]


def test_next_proposal_is_drafted_while_a_run_trains(tmp_path):
    ws = make_workspace(tmp_path)
    engine, agent, _ = run(
        ws, [knob("X", "1.0", "0.5"), knob("MODE", '"ok"', '"ok" ', "noop")], 3, '[policy]\nname = "strict"\n'
    )
    assert statuses(engine) == [(1, "keep"), (2, "keep"), (3, "discard")]
    # the first agent call waits for the baseline (nothing to draft against); the second is drafted
    # during experiment 2, with experiment 2 in flight
    assert [c["training"] for c in agent.calls] == [False, True]
    assert agent.calls[1]["ctx"].in_flight == ["X 1.0 -> 0.5"]
    # experiment 2 was kept after the draft was written: the draft was re-based onto it
    assert engine.ledger.experiments()[2].rebased is True


def test_a_draft_that_no_longer_applies_is_asked_again(tmp_path):
    ws = make_workspace(tmp_path)
    proposals = [knob("X", "1.0", "0.5"), knob("X", "1.0", "0.7", "stale draft"), knob("X", "0.5", "0.25")]
    engine, agent, events = run(ws, proposals, 3, '[policy]\nname = "strict"\n')
    assert [e.description for e in engine.ledger.experiments()] == ["baseline", "X 1.0 -> 0.5", "X 0.5 -> 0.25"]
    assert any("no longer applies" in e.get("text", "") for e in events)


def test_noise_policy_repeats_the_baseline_and_confirms(tmp_path):
    ws = make_workspace(tmp_path, NOISY)
    toml = '[policy]\nname = "noise"\nrepeats = 3\n'
    engine, agent, _ = run(ws, [knob("X", "1.0", "0.999", "tiny"), knob("X", "1.0", "0.5", "big")], 3, toml)
    base, tiny, big = engine.ledger.experiments()
    assert base.status == "keep" and len(base.runs) == 3 and base.seeds == [0, 1, 2]
    assert tiny.status == "discard" and "sigma" in tiny.decision_reason
    assert big.status == "keep" and big.decision["z"] > 2
    assert engine.sigma() is not None and engine.sigma() > 0


def test_smoke_run_catches_a_crash_cheaply(tmp_path):
    ws = make_workspace(tmp_path)
    engine, _, _ = run(
        ws, [knob("MODE", '"ok"', '"fail"')], 2, '[budget]\nsmoke_fraction = 0.1\n[policy]\nname = "strict"\n'
    )
    crash = engine.ledger.experiments()[-1]
    assert crash.status == "crash" and "smoke run" in crash.decision_reason
    runs = ws / ".nightlab/runs/main/2"
    assert (runs / "smoke/run.log").exists() and not (runs / "run.log").exists()


def test_cost_cap_stops_the_loop_cleanly(tmp_path):
    ws = make_workspace(tmp_path)
    paid = [
        Proposal(description=f"X {v}", edits=[FileEdit("train.py", "X = 1.0", f"X = {v}")], usage={"cost_usd": 0.6})
        for v in ("0.9", "0.8", "0.7")
    ]
    engine, agent, events = run(
        ws, paid, 10, '[run]\nmax_cost_usd = 1.0\npropose_ahead = false\n[policy]\nname = "strict"\n'
    )
    assert len(engine.ledger.experiments()) == 3  # baseline + 2 paid proposals, then 1.20 >= 1.00
    assert engine.ledger.cost_usd() == pytest.approx(1.2)
    assert any("max_cost_usd" in e.get("text", "") for e in events)
    assert events[-1]["state"] == "stopped"


def test_llm_agent_gets_one_retry_with_feedback(tmp_path):
    ws = make_workspace(tmp_path)
    bad = Proposal(
        description="typo'd search", edits=[FileEdit("train.py", "X = 9.9", "X = 0.5")], usage={"cost_usd": 0.1}
    )
    good = Proposal(description="fixed", edits=[FileEdit("train.py", "X = 1.0", "X = 0.5")], usage={"cost_usd": 0.1})
    bad2 = Proposal(description="bad again", edits=[FileEdit("train.py", "X = 7", "X = 0.5")])
    engine, agent, _ = run(
        ws, [bad, good, bad, bad2], 3, '[run]\npropose_ahead = false\n[policy]\nname = "strict"\n', name="claude"
    )
    base, fixed, rejected = engine.ledger.experiments()
    assert fixed.description == "fixed" and fixed.status == "keep" and fixed.usage["cost_usd"] == pytest.approx(0.2)
    assert "X = 9.9" in agent.calls[1]["ctx"].feedback
    assert rejected.status == "crash" and "rejected twice" in rejected.decision_reason


def test_invalid_proposal_is_recorded_and_the_loop_goes_on(tmp_path):
    ws = make_workspace(tmp_path)
    engine, _, _ = run(
        ws,
        [ProposalError("no tool call, twice", usage={"cost_usd": 0.05}), knob("X", "1.0", "0.5")],
        3,
        '[run]\npropose_ahead = false\n[policy]\nname = "strict"\n',
    )
    assert statuses(engine) == [(1, "keep"), (2, "crash"), (3, "keep")]
    assert "invalid" in engine.ledger.experiments()[1].decision_reason
    assert not (ws / ".nightlab/runs/main/2").exists()
