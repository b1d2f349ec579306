"""annotate.py on its own: what an editor shows on a file, from experiments and texts, no server.
Data-driven: each case is the input and what the editor must show."""

import pytest

from nightlab.server.core.types import Experiment
from nightlab.server.editor import annotate as an

PARENT = "import torch\nLR = 0.01\nDEPTH = 4\nWIDTH = 128\n\ndef train():\n    return LR * DEPTH\n"
FAR = PARENT + "".join(f"# line {i}\n" for i in range(10)) + "STEPS = 100\n"  # changes 10 lines apart: two hunks


def exp(number=2, status="keep", delta=-0.0031, z=3.9, metric=0.95, **kw) -> Experiment:
    return Experiment(
        number=number,
        tag="t",
        description=kw.pop("description", f"change {number}"),
        status=status,
        delta=delta,
        metric=metric,
        decision=kw.pop("decision", {"z": z} if z is not None else {}),
        commit=kw.pop("commit", f"c{number}"),
        **kw,
    )


@pytest.mark.parametrize(
    "e, metric, label",
    [
        (exp(), "val_bpb", "-0.0031 bpb (z = -3.9, better)"),
        (exp(z=-2.5), "val_bpb", "-0.0031 bpb (z = +2.5, worse)"),
        (
            exp(delta=-0.109, decision={"z": 10.6, "paired": {"t": 10.6, "n": 3}}, z=None),
            "val_bpb",
            "-0.1090 bpb (t = -10.6, paired, better)",
        ),
        (exp(z=None), "val_bpb", "-0.0031 bpb"),
        (exp(delta=None, z=None), "val_bpb", "0.9500 bpb"),
        (exp(delta=None, z=None, metric=None, status="crash"), "val_bpb", "crash"),
        (exp(delta=0.25, z=None), "accuracy", "+0.2500 accuracy"),
    ],
)
def test_verdict_label(e, metric, label):
    assert an.verdict_label(e, metric) == label


def test_reviewable_is_kept_non_baseline_unrejected_newest_first():
    exps = [
        exp(1, kind="baseline"),
        exp(2),
        exp(3, status="discard"),
        exp(4, review="rejected"),
        exp(5),
        exp(6, commit=""),
        exp(7, review="accepted"),
    ]
    assert [e.number for e in an.reviewable(exps)] == [7, 5, 2]
    assert [e.number for e in an.reviewable(exps, limit=1)] == [7]


def texts(new: str, number: int = 2, parent: str = PARENT) -> an.FileTexts:
    return an.FileTexts(exp(number), parent, new)


ONE_HUNK = PARENT.replace("LR = 0.01", "LR = 0.02")
TWO_HUNKS = ONE_HUNK.replace("    return LR * DEPTH", "    return 2 * LR * DEPTH")  # one hunk: 4 lines apart
FAR_TWO = FAR.replace("LR = 0.01", "LR = 0.02").replace("STEPS = 100", "STEPS = 200")


@pytest.mark.parametrize(
    "new, buffer, titles, planned",
    [
        # the buffer is the parent: the whole change, and per-hunk actions when there are several
        (ONE_HUNK, PARENT, ["Apply experiment #2: -0.0031 bpb (z = -3.9, better) (change 2)"], [1]),
        (TWO_HUNKS, PARENT, ["Apply experiment #2: -0.0031 bpb (z = -3.9, better) (change 2)"], [1]),
        (
            FAR_TWO,
            FAR,
            [
                "Apply experiment #2: -0.0031 bpb (z = -3.9, better) (change 2)",
                "Apply hunk 1 of #2: ",
                "Apply hunk 2 of #2: ",
            ],
            [2, 1, 1],
        ),
        # already in the buffer: nothing to offer
        (ONE_HUNK, ONE_HUNK, [], []),
        # the user rewrote the line the change touches: open the diff instead, no edit
        (
            ONE_HUNK,
            PARENT.replace("LR = 0.01", "LR = 0.5  # mine"),
            [
                "Open the diff of experiment #2: -0.0031 bpb (z = -3.9, better) (change 2): "
                "1 hunk(s) no longer apply here"
            ],
            [0],
        ),
    ],
)
def test_apply_actions(new, buffer, titles, planned):
    actions = an.apply_actions([texts(new, parent=FAR if new is FAR_TWO else PARENT)], buffer, "train.py")
    assert [a.title[: len(t)] for a, t in zip(actions, titles, strict=False)] == titles and len(actions) == len(titles)
    assert [len(a.edits) for a in actions] == planned
    assert all(a.path == "train.py" for a in actions)
    assert [a.hunk for a in actions][1:] == list(range(len(actions) - 1))


TRACEBACK = (
    'Traceback (most recent call last):\n  File "/ws/.nightlab/slots/t/0/prepare.py", line 3, in <module>\n'
    '  File "/ws/.nightlab/slots/t/0/train.py", line 7, in train\nZeroDivisionError: division by zero\n'
)


@pytest.mark.parametrize(
    "error, buffer, where",
    [
        (TRACEBACK, PARENT, ("train.py", 6)),  # the deepest frame in an editable file
        (TRACEBACK, "# a new first line\n" + PARENT, ("train.py", 7)),  # found by its text in the moved buffer
        (TRACEBACK.replace("train.py", "other.py"), PARENT, None),  # no frame in an editable file
        ("", PARENT, None),
    ],
)
def test_crash_location(error, buffer, where):
    e = exp(4, status="crash", error=error, decision_reason="ZeroDivisionError: division by zero")
    found = an.crash_location(e, ["train.py"], {"train.py": PARENT}, {"train.py": buffer})
    assert (found[:2] if found else None) == where
    if found:
        assert found[2] == "experiment #4 (change 4) crashed here: ZeroDivisionError: division by zero"


def test_line_history_matches_the_assignment_target_newest_first():
    history = [texts(ONE_HUNK, 3), texts(PARENT.replace("DEPTH = 4", "DEPTH = 6"), 2)]
    assert an.line_history(history, "LR = 0.05") == [
        "- **#3** keep: `LR = 0.02` -0.0031 bpb (z = -3.9, better) - change 3"
    ]
    assert an.line_history(history, "DEPTH = 4") == [
        "- **#2** keep: `DEPTH = 6` -0.0031 bpb (z = -3.9, better) - change 2"
    ]
    assert an.line_history(history, "import torch") == [] and an.line_history(history, "   ") == []
    # #5 changes LR and the return line, 4 lines apart (one hunk holding DEPTH = 4 unchanged): not DEPTH's
    assert an.line_history([texts(TWO_HUNKS, 5)], "DEPTH = 4") == []
    assert len(an.line_history([texts(ONE_HUNK, n) for n in range(20)], "LR = 1", limit=5)) == 5


def test_chain_hints_label_the_lines_kept_experiments_wrote():
    buffer = TWO_HUNKS.replace("DEPTH = 4", "DEPTH = 6")
    chain = [texts(TWO_HUNKS, 5), texts(PARENT.replace("DEPTH = 4", "DEPTH = 6"), 3)]
    # only the lines each one changed: #5's hunk also spans DEPTH .. def train() unchanged, not its own
    assert an.chain_hints(chain, buffer) == [
        (1, " #5 -0.0031 bpb (z = -3.9, better)"),
        (2, " #3 -0.0031 bpb (z = -3.9, better)"),
        (6, " #5 -0.0031 bpb (z = -3.9, better)"),
    ]
