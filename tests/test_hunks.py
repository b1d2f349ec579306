"""Experiment hunks placed into an edited buffer: apply / applied / conflict, edit ranges, line endings."""

from __future__ import annotations

import random

import pytest

from nightlab.server.changes.hunks import apply_plans, locate, parse_hunks, plan

PARENT = """\
# ---------------------------------------------------------------------------
# knobs
DEPTH = 8  # layers
MATRIX_LR = 0.02  # Muon
EMBED_LR = 0.6
WARMUP = 0.0
COOLDOWN = 0.5
BATCH = 16

# ---------------------------------------------------------------------------
# model

class MLP(nn.Module):
    def forward(self, x):
        x = self.fc(x)
        x = F.relu(x).square()
        return self.proj(x)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def main():
    model = GPT(DEPTH)
    train(model, MATRIX_LR)
"""

KNOB = PARENT.replace("MATRIX_LR = 0.02", "MATRIX_LR = 0.04")
# three hunks: a knob, an activation (one line changed, one added), a deleted line
MULTI = KNOB.replace("        x = F.relu(x).square()\n", "        x = F.gelu(x)\n        x = x * 2\n").replace(
    "    train(model, MATRIX_LR)\n", ""
)
HUNK2_ONLY = PARENT.replace("        x = F.relu(x).square()\n", "        x = F.gelu(x)\n        x = x * 2\n")
ABOVE = "import math\nimport os\n"
RUN = "x = 1\n" + "b\n" * 6 + "y = 2\n"
TEN = "\n".join(f"{c} = 1" for c in "ABCDEFGHIJ")  # no final newline


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


CASES = [
    # name, parent, experiment, buffer, expected states, expected buffer after the "apply" plans
    ("knob", PARENT, KNOB, PARENT, ["apply"], KNOB),
    ("several hunks", PARENT, MULTI, PARENT, ["apply"] * 3, MULTI),
    ("lines inserted above", PARENT, MULTI, ABOVE + PARENT, ["apply"] * 3, ABOVE + MULTI),
    ("already applied", PARENT, MULTI, MULTI, ["applied"] * 3, MULTI),
    ("applied, then lines inserted above", PARENT, MULTI, ABOVE + MULTI, ["applied"] * 3, ABOVE + MULTI),
    ("one of three applied", PARENT, MULTI, KNOB, ["applied", "apply", "apply"], MULTI),
    (
        "old line edited by the user",
        PARENT,
        KNOB,
        PARENT.replace("0.02", "0.03"),
        ["conflict"],
        PARENT.replace("0.02", "0.03"),
    ),
    (
        "one conflict, the rest apply",
        PARENT,
        MULTI,
        PARENT.replace("0.02", "0.03"),
        ["conflict", "apply", "apply"],
        MULTI.replace("0.04", "0.03"),
    ),
    ("spacing differs", PARENT, KNOB, PARENT.replace("MATRIX_LR = 0.02  #", "MATRIX_LR=0.02 #"), ["apply"], KNOB),
    ("trailing whitespace", PARENT, KNOB, PARENT.replace("# Muon\n", "# Muon   \n"), ["apply"], KNOB),
    (
        "re-indented by the user",
        PARENT,
        HUNK2_ONLY,
        PARENT.replace("\n    ", "\n        "),
        ["apply"],
        HUNK2_ONLY.replace("\n    ", "\n        "),
    ),
    ("no trailing newline", "A = 1\nB = 2", "A = 1\nB = 3", "A = 1\nB = 2", ["apply"], "A = 1\nB = 3"),
    (
        "no trailing newline, line appended",
        "A = 1\nB = 2",
        "A = 1\nB = 2\nC = 3",
        "A = 1\nB = 2",
        ["apply"],
        "A = 1\nB = 2\nC = 3",
    ),
    ("trailing newline added", "A = 1\nB = 2", "A = 1\nB = 2\n", "A = 1\nB = 2", ["apply"], "A = 1\nB = 2\n"),
    ("trailing newline removed", "A = 1\nB = 2\n", "A = 1\nB = 2", "A = 1\nB = 2\n", ["apply"], "A = 1\nB = 2"),
    ("user dropped the final newline", "A = 1\nB = 2\n", "A = 1\nB = 3\n", "A = 1\nB = 2", ["apply"], "A = 1\nB = 3"),
    ("append after a buffer without final newline", "A = 1\n", "A = 1\nB = 2\n", "A = 1", ["apply"], "A = 1\nB = 2"),
    ("CRLF buffer", PARENT, MULTI, crlf(PARENT), ["apply"] * 3, crlf(MULTI)),
    ("CRLF buffer already applied", PARENT, MULTI, crlf(MULTI), ["applied"] * 3, crlf(MULTI)),
    (
        "CRLF, no trailing newline",
        "A = 1\nB = 2",
        "A = 1\nB = 3\nC = 4",
        "A = 1\r\nB = 2",
        ["apply"],
        "A = 1\r\nB = 3\r\nC = 4",
    ),
    ("empty parent", "", "A = 1\n", "", ["apply"], "A = 1\n"),
    ("empty parent, buffer already has it", "", "A = 1\n", "A = 1\n", ["applied"], "A = 1\n"),
    (
        "pure insertion, applied, context then edited",
        "A\nB\nC\nD\n",
        "A\nB\nX = 1\nC\nD\n",
        "A\nB\nX = 1\nC\nD edited\n",
        ["applied"],
        "A\nB\nX = 1\nC\nD edited\n",
    ),
    # the changed line also exists elsewhere: the copy that was changed is found by its context
    (
        "common line, applied",
        PARENT.replace("def norm(x):\n", "def norm(x):\n    x = F.relu(x).square()\n"),
        PARENT.replace("def norm(x):\n", "def norm(x):\n    x = F.relu(x).square()\n").replace(
            "        x = F.relu(x).square()", "        x = F.gelu(x)"
        ),
        ABOVE
        + PARENT.replace("def norm(x):\n", "def norm(x):\n    x = F.relu(x).square()\n").replace(
            "        x = F.relu(x).square()", "        x = F.gelu(x)"
        ),
        ["applied"],
        None,
    ),
    (
        "old and new both present, no context",
        "A\nB\nC\nOLD\nD\nE\nF\n",
        "A\nB\nC\nNEW\nD\nE\nF\n",
        "x\nOLD\ny\nNEW\nz\n",
        ["conflict"],
        "x\nOLD\ny\nNEW\nz\n",
    ),
    (
        "moved, context gone, old line unique",
        "A\nB\nC\nOLD\nD\nE\nF\n",
        "A\nB\nC\nNEW\nD\nE\nF\n",
        "x\ny\nOLD\nz\n",
        ["apply"],
        "x\ny\nNEW\nz\n",
    ),
    (
        "a line added to a run of equal lines",
        RUN,
        RUN.replace("b\n", "b\nb\n", 1),
        RUN,
        ["apply"],
        RUN.replace("b\n", "b\nb\n", 1),
    ),
    (
        "a line added to a run, applied",
        RUN,
        RUN.replace("b\n", "b\nb\n", 1),
        RUN.replace("b\n", "b\nb\n", 1),
        ["applied"],
        None,
    ),
    (
        "final newline added far from the change",
        TEN,
        "A = 2" + TEN[5:] + "\n",
        TEN,
        ["apply", "apply"],
        "A = 2" + TEN[5:] + "\n",
    ),
    (
        "final newline added far from the change, applied",
        TEN,
        "A = 2" + TEN[5:] + "\n",
        "A = 2" + TEN[5:] + "\n",
        ["applied", "applied"],
        None,
    ),
    (
        "blank line deleted, context gone",
        "A\nB\nC\n\nD\nE\nF\n",
        "A\nB\nC\nD\nE\nF\n",
        "x\n\ny\n",
        ["conflict"],
        "x\n\ny\n",
    ),
]


@pytest.mark.parametrize("name, parent, experiment, buffer, states, expected", CASES, ids=[c[0] for c in CASES])
def test_plan(name, parent, experiment, buffer, states, expected):
    plans = plan(parent, experiment, buffer)
    assert [p.state for p in plans] == states, [p.reason for p in plans]
    if expected is not None:
        assert apply_plans(buffer, plans) == expected


def test_knob_hunk_and_edit():
    [h] = parse_hunks(PARENT, KNOB)
    assert (h.index, h.start, h.end, h.new_start) == (0, 3, 4, 3)
    assert h.old_lines == ("MATRIX_LR = 0.02  # Muon\n",) and h.new_lines == ("MATRIX_LR = 0.04  # Muon\n",)
    assert h.before == (PARENT.splitlines(keepends=True)[0], "# knobs\n", "DEPTH = 8  # layers\n")
    assert h.after == ("EMBED_LR = 0.6\n", "WARMUP = 0.0\n", "COOLDOWN = 0.5\n")
    assert h.summary == "MATRIX_LR = 0.02 -> 0.04"
    [p] = plan(PARENT, KNOB, PARENT)
    assert (p.range, p.text, p.reason) == ((3, 0, 4, 0), "MATRIX_LR = 0.04  # Muon\n", "exact")


def test_summaries():
    assert [h.summary for h in parse_hunks(PARENT, MULTI)] == ["MATRIX_LR = 0.02 -> 0.04", "+2 -1 lines", "+0 -1 lines"]
    [h] = parse_hunks("return x\n", "return y\n")
    assert h.summary == "return x -> return y"


def test_only_hunk_two():
    plans = plan(PARENT, MULTI, ABOVE + PARENT)
    assert plans[1].reason == "moved by +2 lines"
    assert apply_plans(ABOVE + PARENT, [plans[1]]) == ABOVE + HUNK2_ONLY


@pytest.mark.parametrize(
    "buffer, end",
    [("A = 1\nB = 2", (1, 5)), ("A = 1\nB = 2\n", (2, 0)), ("A = 1\r\nB = 2", (1, 5)), ("A = 1\r\nB = 2\r\n", (2, 0))],
)
def test_edit_range_at_the_end(buffer, end):
    [p] = plan("A = 1\nB = 2\n", "A = 1\nB = 3\n", buffer)
    assert p.range == (1, 0, *end)


def test_crlf_replacement_text():
    [p] = plan(PARENT, HUNK2_ONLY, crlf(PARENT))
    assert p.text == "        x = F.gelu(x)\r\n        x = x * 2\r\n"


def test_locate_states():
    h1, h2, h3 = parse_hunks(PARENT, MULTI)
    lines = (ABOVE + PARENT).splitlines()
    loc = locate(h2, lines)
    assert (loc.start, loc.end, loc.state, loc.how) == (h2.start + 2, h2.end + 2, "found", "moved")
    loc = locate(h3, MULTI.splitlines(keepends=True))  # a deletion, applied: an empty range
    assert (loc.state, loc.start, loc.end) == ("applied", h3.start + 1, h3.start + 1)
    assert locate(h1, PARENT.replace("0.02", "0.03").splitlines()) is None


def test_overlapping_edits_are_refused():
    plans = plan(PARENT, KNOB, PARENT)
    with pytest.raises(ValueError):
        apply_plans(PARENT, plans + plans)


# --------------------------------------------------------------------------------------------------
# generated examples: every hunk applied to the parent gives the experiment, whatever the line endings


def _mutate(rng: random.Random, lines: list[str], pool: list[str]) -> list[str]:
    out = list(lines)
    for _ in range(rng.randint(1, 4)):
        i = rng.randint(0, len(out))
        op = rng.choice(["replace", "insert", "delete"])
        if op == "insert" or not out or i == len(out):
            out[i:i] = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
        elif op == "replace":
            out[i : i + rng.randint(1, 2)] = [rng.choice(pool) for _ in range(rng.randint(1, 3))]
        else:
            del out[i : i + rng.randint(1, 2)]
    return out


def _text(lines: list[str], final_newline: bool, eol: str = "\n") -> str:
    return eol.join(lines) + (eol if final_newline and lines else "")


@pytest.mark.parametrize("seed", range(300))
def test_generated_apply_all(seed):
    rng = random.Random(seed)
    pool = ["a = 1", "b = 2", "", "    x = f(x)", "return x", "c = 3", "  "]  # repeats on purpose
    parent = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
    experiment = _mutate(rng, parent, pool)
    eol = rng.choice(["\n", "\r\n"])
    p_text = _text(parent, rng.random() < 0.8, eol)
    e_text = _text(experiment, rng.random() < 0.8, eol)
    plans = plan(p_text, e_text, p_text)
    assert all(p.state == "apply" for p in plans)
    assert apply_plans(p_text, plans) == e_text
    for p in plans:  # each hunk alone applies too
        apply_plans(p_text, [p])


@pytest.mark.parametrize("seed", range(200))
def test_generated_moved_and_idempotent(seed):
    rng = random.Random(seed)
    parent = [f"L{i} = {i}" for i in range(rng.randint(1, 40))]  # distinct lines: no ambiguity
    experiment = _mutate(rng, parent, [f"N{i} = {i}" for i in range(100)])
    final = rng.random() < 0.8
    p_text, e_text = _text(parent, final), _text(experiment, final)
    above = "".join(f"U{i}\n" for i in range(rng.randint(0, 5)))
    plans = plan(p_text, e_text, above + p_text)
    assert apply_plans(above + p_text, plans) == above + e_text
    assert all(p.state == "applied" for p in plan(p_text, e_text, above + e_text))
