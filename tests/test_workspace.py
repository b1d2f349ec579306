"""`nightlab init` without training: profiles, the low-noise token budget, constants rewriting."""

import subprocess

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.trainer.workspace import InitError, init_workspace, render, set_constants


@pytest.mark.parametrize(
    "text,values,expected",
    [
        ("DEPTH = 4   # blocks\n", {"DEPTH": 8}, "DEPTH = 8   # blocks\n"),
        ("LR = 0.02\nX = 1\n", {"LR": 0.04}, "LR = 0.04\nX = 1\n"),
        ("COMPILE = False  # slow on CPU\n", {"COMPILE": True}, "COMPILE = True   # slow on CPU\n"),
        ("seconds = 60   # budget\n", {"seconds": 300}, "seconds = 300  # budget\n"),
    ],
)
def test_set_constants(text, values, expected):
    assert set_constants(text, values) == expected


def test_set_constants_unknown_name():
    with pytest.raises(InitError, match="NOPE"):
        set_constants("A = 1\n", {"NOPE": 2})


def test_gpu_profile_is_autoresearch_sized():
    files = render("gpu")
    for line in ("DEPTH = 8", "WIDTH = 512", "SEQ_LEN = 2048", "TOTAL_BATCH_SIZE = 524288", "COMPILE = True"):
        assert line in files["train.py"]
    assert "seconds = 300" in files["nightlab.toml"]
    assert (
        render("cpu")["train.py"]
        == (__import__("nightlab.trainer", fromlist=["x"]).TEMPLATE_DIR / "train.py").read_text()
    )


def test_init_with_a_token_budget(tmp_path):
    init_workspace(tmp_path / "ws", profile="cpu", budget_tokens=250000)
    settings = load_settings(tmp_path / "ws")
    assert (settings.budget.mode, settings.budget.tokens) == ("tokens", 250000)
    log = subprocess.run(["git", "log", "--oneline"], cwd=tmp_path / "ws", capture_output=True, text=True).stdout
    assert "nightlab init" in log
