"""Parsing and printing autoresearch's summary block, FAIL line and step lines (data-driven)."""

from __future__ import annotations

import math

import pytest

from nightlab.server.core.types import Progress
from nightlab.server.run.summary import SUMMARY_KEYS, format_summary, has_fail, parse_step_line, parse_summary
from support.summary import REFERENCE_BLOCK

# what the reference block (docs/REFERENCE.md section 1: autoresearch's published H100 baseline) holds
REFERENCE_VALUES = {
    "val_bpb": 0.9979,
    "training_seconds": 300.1,
    "total_seconds": 325.9,
    "peak_vram_mb": 45060.2,
    "mfu_percent": 39.8,
    "total_tokens_M": 499.6,
    "num_steps": 953,
    "num_params_M": 50.3,
    "depth": 8,
}

STEP = (
    "step 00142 (97.9%) | loss: 1.477514 | lrm: 0.04 | dt: 415ms | tok/sec: 1,262,501 | mfu: 30.5% | epoch: 3 "
    "| remaining: 1s"
)

PARSE_CASES = [
    ("reference block", REFERENCE_BLOCK, REFERENCE_VALUES),
    ("no block", "step 00001 (1.0%) | loss: 9.0\nTraining completed\n", {}),
    ("empty", "", {}),
    (
        "step lines rewritten with \\r before the block",
        "\rstep 00001 (0.5%) | loss: 9.1    \rstep 00002 (1.0%) | loss: 8.7    \n" + REFERENCE_BLOCK + "\n",
        REFERENCE_VALUES,
    ),
    ("the last block wins", "---\nval_bpb:          1.500000\n" + REFERENCE_BLOCK, REFERENCE_VALUES),
    (
        "extra keys kept, junk skipped",
        "---\nval_bpb:          1.250000\nwarning: something odd\nseed:             7\nnote: not-a-number\n",
        {"val_bpb": 1.25, "seed": 7.0},
    ),
    (
        "CRLF line ends",
        "---\r\nval_bpb:          1.100000\r\nnum_steps:        12\r\n",
        {"val_bpb": 1.1, "num_steps": 12.0},
    ),
]


@pytest.mark.parametrize("name,text,expected", PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_summary(name: str, text: str, expected: dict) -> None:
    assert parse_summary(text) == pytest.approx(expected)


def test_parse_summary_reads_nan() -> None:
    assert math.isnan(parse_summary("---\nval_bpb:          nan\n")["val_bpb"])


def test_format_matches_reference_exactly() -> None:
    assert format_summary(REFERENCE_VALUES) == REFERENCE_BLOCK


ROUND_TRIP_CASES = [
    REFERENCE_VALUES,
    {
        "val_bpb": 2.123456,
        "training_seconds": 60.0,
        "total_seconds": 71.3,
        "peak_vram_mb": 812.5,
        "mfu_percent": 0.0,
        "total_tokens_M": 1.2,
        "num_steps": 41,
        "num_params_M": 0.8,
        "depth": 2,
    },
    {"val_bpb": 1.0, "num_steps": 3},  # a subset keeps its order and formats
]


@pytest.mark.parametrize("values", ROUND_TRIP_CASES)
def test_round_trip(values: dict) -> None:
    text = format_summary(values)
    assert parse_summary("some log\n" + text + "\n") == pytest.approx(values)
    assert [line.split(":")[0] for line in text.splitlines()[1:]] == [k for k in SUMMARY_KEYS if k in values]


def test_format_extra_keys_follow_known_ones() -> None:
    assert format_summary({"seed": 3, "val_bpb": 1.0}) == "---\nval_bpb:          1.000000\nseed:             3"


FAIL_CASES = [
    ("FAIL\n", True),
    ("step 00010 (5.0%) | loss: nan\nFAIL\n", True),
    ("\rstep 00010 (5.0%) | loss: 120.0    \nFAIL", True),
    ("FAILED to load\n", False),
    ("the run did not FAIL\n", False),
    ("", False),
]


@pytest.mark.parametrize("text,expected", FAIL_CASES)
def test_has_fail(text: str, expected: bool) -> None:
    assert has_fail(text) is expected


STEP_CASES = [
    (
        "autoresearch",
        STEP,
        Progress(step=142, elapsed_s=0.0, loss=1.477514, tok_per_s=1262501.0, mfu=30.5, fraction=0.979),
    ),
    (
        "leading \\r and padding",
        "\r" + STEP + "    ",
        Progress(step=142, elapsed_s=0.0, loss=1.477514, tok_per_s=1262501.0, mfu=30.5, fraction=0.979),
    ),
    (
        "fork with lr, tok/s and elapsed",
        "step 0007 (10.0%) | loss: 3.2500 | lr: 3.00e-03 | tok/s: 45,000 | elapsed: 6.5s",
        Progress(step=7, elapsed_s=6.5, loss=3.25, tok_per_s=45000.0, lr=0.003, fraction=0.1),
    ),
    ("no percentage", "step 5 | loss: 2.0", Progress(step=5, elapsed_s=0.0, loss=2.0)),
    ("not a step line", "Training completed in 300.1s", None),
    ("summary key", "num_steps:        953", None),
    ("empty", "", None),
]


@pytest.mark.parametrize("name,line,expected", STEP_CASES, ids=[c[0] for c in STEP_CASES])
def test_parse_step_line(name: str, line: str, expected) -> None:
    got = parse_step_line(line)
    if expected is None:
        assert got is None
        return
    assert got is not None
    for field in ("step", "elapsed_s", "loss", "tok_per_s", "mfu", "lr", "fraction"):
        want, have = getattr(expected, field), getattr(got, field)
        assert have == (pytest.approx(want) if isinstance(want, float) else want), field
