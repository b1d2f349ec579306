"""The offline agent: knobs read with ast, one change per proposal, no repeats, learned directions,
determinism, exhaustion; and the agent registry."""

from __future__ import annotations

import pytest

from nightlab.server.agents.base import Agent, AgentError, agent_names, make_agent, register_agent
from nightlab.server.agents.offline import OfflineAgent, _candidates, find_knobs
from nightlab.server.changes.edits import apply_edits
from nightlab.server.core.types import ExperimentContext, HistoryItem, Proposal

TRAIN = """\
import math
# ----
DEPTH = 4  # layers
LR = 3e-4
WEIGHT_DECAY = 0.1
BATCH_SIZE = 128
WARMUP = -2
USE_NORM: bool = True
NAME = "gpt"
RATIO = 2 * 3
lower = 5
PAIR = (1, 2)
TWICE = 1
TWICE = 2
A = 1; B = 2
LONG = (
    5
)
def f():
    INNER = 3
"""


def test_find_knobs():
    got = [(k.name, k.value, k.text) for k in find_knobs("train.py", TRAIN)]
    assert got == [
        ("DEPTH", 4, "4"),
        ("LR", 3e-4, "3e-4"),
        ("WEIGHT_DECAY", 0.1, "0.1"),
        ("BATCH_SIZE", 128, "128"),
        ("WARMUP", -2, "-2"),
        ("USE_NORM", True, "True"),
    ]
    k = find_knobs("train.py", TRAIN)[0]
    assert k.line == "DEPTH = 4  # layers" and k.line[k.start : k.end] == "4"
    assert find_knobs("train.py", "def broken(:\n") == []


CANDIDATES = [
    # assignment, level, candidate values (the texts written)
    ("DEPTH = 4", 0, ["5", "3"]),
    ("DEPTH = 4", 1, ["6", "2"]),
    ("DEPTH = 1", 0, ["2"]),  # never 0: sizes keep their sign
    ("DEPTH = 0", 0, ["1"]),
    ("BATCH = 128", 0, ["256", "64"]),  # powers of two stay powers of two
    ("BATCH = 128", 1, ["512", "32"]),
    ("STEPS = 1000", 0, ["1500", "670"]),
    ("STEPS = 1000", 1, ["2000", "500"]),
    ("WARMUP = -2", 0, ["-1", "-3"]),
    ("LR = 3e-4", 0, ["6e-4", "1.5e-4", "4.5e-4", "2.01e-4"]),
    ("LR = 0.003", 0, ["0.006", "0.0015", "0.0045", "0.00201"]),
    ("LR = -0.5", 0, ["-1.0", "-0.25", "-0.75", "-0.335"]),
    ("LR = 1E6", 1, ["4e6", "2.5e5", "3e6", "3.3e5"]),
    ("WD = 0.0", 0, ["0.1", "0.01"]),
    ("WD = 0.0", 2, []),
    ("FLAG = False", 0, ["True"]),
    ("FLAG = False", 1, []),
]


@pytest.mark.parametrize("src,level,expected", CANDIDATES)
def test_candidates(src, level, expected):
    (knob,) = find_knobs("t.py", src + "\n")
    assert [c.text for c in _candidates(knob, level)] == expected


def ctx(files: dict[str, str], history: list[HistoryItem] | None = None, seed: int = 0, **kw) -> ExperimentContext:
    return ExperimentContext(program="", files=files, editable=list(files), history=history or [], seed=seed, **kw)


async def test_proposal_is_one_exact_edit():
    agent = make_agent("offline", {}, seed=1)
    assert isinstance(agent, Agent) and agent.name == "offline"
    p = await agent.propose(ctx({"train.py": TRAIN}))
    assert isinstance(p, Proposal) and p.agent == "offline" and len(p.edits) == 1
    knob = p.meta["knob"]
    (before,) = [k for k in find_knobs("train.py", TRAIN) if k.name == knob["name"]]
    (after,) = [k for k in find_knobs("train.py", p.edits[0].replace + "\n") if k.name == knob["name"]]
    assert p.description == f"{knob['name']} {before.text} -> {after.text}"
    assert (before.value, after.value) == (knob["old"], knob["new"])
    assert p.hypothesis.endswith(".") and "val_bpb" in p.hypothesis
    new = apply_edits({"train.py": TRAIN}, p.edits, ["train.py"], ["prepare.py"])["train.py"]
    changed = [(a, b) for a, b in zip(TRAIN.splitlines(), new.splitlines(), strict=False) if a != b]
    assert len(changed) == 1 and changed[0][0] == p.edits[0].search


def simulate(files: dict[str, str], steps: int, seed: int = 0, keep=lambda p: False) -> list[Proposal]:
    """The loop without training: propose, apply, keep or discard, remember."""
    agent, history, out = OfflineAgent({}, seed), [], []
    for n in range(1, steps + 1):
        p = agent.propose_now(ctx(files, history, seed))
        new = apply_edits(files, p.edits, list(files), [])
        status = "keep" if keep(p) else "discard"
        if status == "keep":
            files = {**files, **new}
        history.append(HistoryItem(n, p.description, status, None, None, meta=p.meta))
        out.append(p)
    return out


def test_never_repeats_then_widens_then_stops():
    files = {"train.py": "DEPTH = 4\nFLAG = True\n"}
    proposals = simulate(files, 8)
    tried = [(p.meta["knob"]["name"], p.meta["knob"]["new"]) for p in proposals]
    assert len(set(tried)) == len(tried)
    assert ("DEPTH", 4) not in tried and ("FLAG", True) not in tried  # the current values count as tried
    assert sorted(tried) == sorted([("FLAG", False)] + [("DEPTH", v) for v in (5, 3, 6, 2, 7, 1, 8)])
    levels = [p.meta["knob"]["level"] for p in proposals if p.meta["knob"]["name"] == "DEPTH"]
    assert levels == sorted(levels)  # wider steps only after the narrower ones are used up
    with pytest.raises(AgentError, match="tried every value"):
        simulate(files, 9)


def test_no_repeat_after_a_keep():
    # DEPTH 4 -> 5 kept: 4 is still "tried", so going back is not proposed as something new.
    files = {"train.py": "DEPTH = 4\n"}
    proposals = simulate(files, 6, keep=lambda p: p.meta["knob"]["new"] > p.meta["knob"]["old"])
    news = [p.meta["knob"]["new"] for p in proposals]
    assert len(set(news)) == len(news) and 4 not in news


def test_deterministic_for_a_seed_and_history():
    files = {"train.py": TRAIN}
    a = [p.description for p in simulate(files, 8, seed=3)]
    b = [p.description for p in simulate(files, 8, seed=3)]
    assert a == b
    firsts = {simulate(files, 1, seed=s)[0].description for s in range(12)}
    assert len(firsts) > 3  # the seed matters


def test_kept_direction_becomes_more_likely():
    files = {"train.py": "LR = 0.004\nDEPTH = 4\n"}

    def history(status: str) -> list[HistoryItem]:
        meta = {"knob": {"file": "train.py", "name": "LR", "old": 0.002, "new": 0.004}}
        return [HistoryItem(1, "LR 0.002 -> 0.004", status, 1.0, -0.01, meta=meta)]

    def ups(status: str) -> int:
        count = 0
        for seed in range(300):
            p = OfflineAgent({}, seed).propose_now(ctx(files, history(status), seed))
            count += p.meta["knob"]["name"] == "LR" and p.meta["knob"]["direction"] == "up"
        return count

    kept, discarded = ups("keep"), ups("discard")
    assert kept > 1.5 * discarded
    p = next(
        p
        for s in range(50)
        if (p := OfflineAgent({}, s).propose_now(ctx(files, history("keep"), s))).meta["knob"]["direction"] == "up"
        and p.meta["knob"]["name"] == "LR"
    )
    assert "kept before (experiment 1)" in p.hypothesis


def test_in_flight_proposals_are_not_proposed_again():
    files = {"train.py": "FLAG = True\nDEPTH = 4\n"}
    busy = ["FLAG True -> False", "DEPTH 4 -> 5"]
    for seed in range(20):
        p = OfflineAgent({}, seed).propose_now(ctx(files, seed=seed, in_flight=busy))
        assert p.description == "DEPTH 4 -> 3"


def test_no_knobs_is_a_clear_error():
    with pytest.raises(AgentError, match="found no UPPER_CASE"):
        OfflineAgent({}, 0).propose_now(ctx({"train.py": "x = 1\nNAME = 'a'\n"}))


def test_registry():
    with pytest.raises(AgentError, match="unknown agent 'gpt9'; known agents: .*offline"):
        make_agent("gpt9", {}, 0)

    class Fixed:
        name = "fixed"

        def __init__(self, options, seed):
            self.options, self.seed = options, seed

        async def propose(self, ctx):
            return Proposal("nothing", [])

    register_agent("fixed", Fixed)
    agent = make_agent("fixed", {"k": 1}, 5)
    assert agent.options == {"k": 1} and agent.seed == 5 and "fixed" in agent_names()


def test_fractions_stay_below_one():
    """ADAM_BETA2 0.95 x2 would be 1.9, a sure crash: fraction-like knobs close the distance to 1 instead."""
    files = {"train.py": "ADAM_BETA2 = 0.95\nWARMDOWN_RATIO = 0.4\nLR = 0.6\n"}
    proposals = simulate(files, 16, keep=lambda p: True) + simulate(files, 24, keep=lambda p: False)
    fractions = [p for p in proposals if p.meta["knob"]["name"] != "LR"]
    assert fractions and all(0 < p.meta["knob"]["new"] < 1 for p in fractions)
    assert any(p.meta["knob"]["new"] > 1 for p in proposals if p.meta["knob"]["name"] == "LR")  # not a fraction
