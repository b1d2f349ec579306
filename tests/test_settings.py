"""nightlab.toml: defaults, validation messages, overrides, the autoresearch fallback."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from nightlab.server.core import autoresearch as autoresearch_mod
from nightlab.server.core.settings import (
    AgentSettings,
    BudgetSettings,
    FileSettings,
    MetricSettings,
    PolicySettings,
    RunSettings,
    SettingsError,
    load_settings,
)


def write(ws: Path, text: str) -> Path:
    (ws / "nightlab.toml").write_text(text)
    return ws


def test_empty_file_gives_defaults(tmp_path):
    s = load_settings(write(tmp_path, ""))
    assert (s.run, s.budget, s.metric, s.files, s.agent, s.policy) == (
        RunSettings(),
        BudgetSettings(),
        MetricSettings(),
        FileSettings(),
        AgentSettings(),
        PolicySettings(),
    )
    assert s.tag == "main" and s.branch == "nightlab/main"
    assert s.deadline_seconds == 60 * 2.0 + 60
    assert s.source == tmp_path.resolve() / "nightlab.toml" and not s.autoresearch
    assert s.run.command == "python train.py" and s.files.editable == ("train.py",)


def test_full_file(tmp_path):
    s = load_settings(
        write(
            tmp_path,
            """
[run]
command = "python3 train.py --fast"
tag = "mar5"
max_experiments = 12
max_hours = 8
seed = 7
[budget]
mode = "tokens"
tokens = 1000000
[metric]
name = "val_loss"
direction = "higher"
[files]
editable = ["train.py", "./model.py"]
protected = ["prepare.py", "data.py"]
program = "notes.md"
[agent]
name = "anthropic"
model = "claude"
[agent.anthropic]
max_tokens = 4000
[policy]
name = "strict"
""",
        )
    )
    assert s.tag == "mar5" and s.run.max_experiments == 12 and s.run.max_hours == 8.0 and s.run.seed == 7
    assert s.budget.mode == "tokens" and s.budget.tokens == 1_000_000
    assert s.deadline_seconds == 600  # tokens mode, no timeout given
    assert s.metric == MetricSettings("val_loss", "higher")
    assert s.files.editable == ("train.py", "model.py")
    assert s.program_path == tmp_path.resolve() / "notes.md"
    assert s.agent.name == "anthropic"
    assert s.agent.options == {"model": "claude", "anthropic": {"max_tokens": 4000}}


DEADLINES = [
    # budget table, expected deadline
    ("", 180.0),
    ("seconds = 300", 660.0),
    ("seconds = 10\nkill_factor = 3\ngrace_seconds = 5", 35.0),
    ("seconds = 10\ntimeout_seconds = 99", 99.0),
    ('mode = "tokens"\ntokens = 5', 600.0),
    ('mode = "tokens"\ntokens = 5\ntimeout_seconds = 42', 42.0),
]


@pytest.mark.parametrize("budget,expected", DEADLINES)
def test_deadline(tmp_path, budget, expected):
    assert load_settings(write(tmp_path, f"[budget]\n{budget}\n")).deadline_seconds == expected


BAD = [
    # file text, the exact message (or a part of it)
    ('[budget]\nseconds = "abc"', "nightlab.toml: [budget] seconds must be a positive number, got 'abc'"),
    ("[budget]\nseconds = 0", "nightlab.toml: [budget] seconds must be a positive number, got 0"),
    ("[budget]\nseconds = -5", "[budget] seconds must be a positive number, got -5"),
    ('[budget]\nmode = "steps"', "[budget] mode must be one of time | tokens, got 'steps'"),
    ('[budget]\nmode = "tokens"', "[budget] tokens must be a positive whole number when mode"),
    ("[budget]\ntokens = 1.5", "[budget] tokens must be a whole number, got 1.5"),
    ("[budget]\nkill_factor = 0.5", "[budget] kill_factor must be 1 or more, got 0.5"),
    ("[budget]\ngrace_seconds = true", "[budget] grace_seconds must be a number, got True"),
    ("[budget]\nsecs = 5", "nightlab.toml: unknown key 'secs' in [budget]"),
    ("[run]\nmax_experiments = -1", "[run] max_experiments must be 0 or more, got -1"),
    ("[run]\nseed = true", "[run] seed must be a whole number, got True"),
    ('[run]\ncommand = ""', "[run] command must not be empty"),
    ('[run]\ntag = "a b"', "[run] tag must be letters, digits"),
    ('[run]\ntag = "x..y"', "[run] tag must be letters"),
    ('[metric]\ndirection = "down"', "[metric] direction must be one of lower | higher, got 'down'"),
    ('[files]\neditable = "train.py"', "[files] editable must be a list of file names"),
    ("[files]\neditable = []", "[files] editable must name at least one file"),
    ('[files]\neditable = ["../x.py"]', "[files] editable must be a path inside the workspace"),
    ('[files]\neditable = ["prepare.py"]', "[files] editable and protected both list prepare.py"),
    ('[run]\nslots = "many"', "slots"),
    ("[run]\npropose_ahead = 1", "true or false"),
    ("[budget]\nsmoke_fraction = 1.5", "below 1"),
    ("[loop]\nx = 1", "nightlab.toml: unknown section [loop]"),
    ("run = 3", "nightlab.toml: run must be a table"),
    ("[budget\nseconds = 1", "nightlab.toml: not valid TOML"),
]


@pytest.mark.parametrize("text,message", BAD)
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(SettingsError) as e:
        load_settings(write(tmp_path, text))
    assert message in str(e.value)


OVERRIDES = [
    # overrides, attribute path, expected
    ({"max_experiments": 3}, "run.max_experiments", 3),
    ({"budget_seconds": 5}, "budget.seconds", 5),
    ({"budget_seconds": 5}, "budget.mode", "time"),
    ({"budget_tokens": 1000}, "budget.mode", "tokens"),
    ({"budget_tokens": 1000}, "budget.tokens", 1000),
    ({"agent": "other"}, "agent.name", "other"),
    ({"tag": "night2"}, "tag", "night2"),
    ({"command": "python t.py"}, "run.command", "python t.py"),
    ({"command": None}, "run.command", "python x.py"),  # a flag not given changes nothing
]


@pytest.mark.parametrize("overrides,attr,expected", OVERRIDES)
def test_overrides(tmp_path, overrides, attr, expected):
    s = load_settings(write(tmp_path, '[run]\ncommand = "python x.py"\n[budget]\nmode = "time"\n'), overrides)
    value = s
    for part in attr.split("."):
        value = getattr(value, part)
    assert value == expected


def test_model_override_wins_over_the_files_anthropic_table(tmp_path):
    text = (
        '[run]\ncommand = "python x.py"\n[agent]\nname = "anthropic"\n[agent.anthropic]\nmodel = "a"\nmax_tokens = 9\n'
    )
    s = load_settings(write(tmp_path, text), {"model": "claude-opus-5"})
    from nightlab.server.agents.anthropic_agent import _options

    assert _options(s.agent.options)["model"] == "claude-opus-5"
    assert _options(s.agent.options)["max_tokens"] == 9  # the rest of the table stays
    assert _options(load_settings(tmp_path).agent.options)["model"] == "a"


def test_bad_override_is_named_as_an_option(tmp_path):
    with pytest.raises(SettingsError, match=r"option budget_seconds: \[budget\] seconds must be a positive number"):
        load_settings(write(tmp_path, ""), {"budget_seconds": -1})
    with pytest.raises(SettingsError, match="unknown override 'budget'"):
        load_settings(write(tmp_path, ""), {"budget": 1})


def test_missing_file_suggests_init(tmp_path):
    with pytest.raises(SettingsError, match="no nightlab.toml.*nightlab init"):
        load_settings(tmp_path)


@pytest.mark.parametrize("uv,command", [("/usr/bin/uv", "uv run train.py"), (None, "python train.py")])
def test_autoresearch_checkout_is_recognised(tmp_path, monkeypatch, uv, command):
    for name in ("prepare.py", "train.py", "program.md"):
        (tmp_path / name).write_text("# autoresearch\n")
    monkeypatch.setattr(autoresearch_mod.shutil, "which", lambda name, path=None: uv if name == "uv" else None)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    s = load_settings(tmp_path, {"max_experiments": 2})
    assert s.autoresearch and s.source is None
    assert s.run.command == command
    # no TIME_BUDGET in this prepare.py: autoresearch's 300 s, killed at 2x as its program.md says
    assert s.budget.seconds == 300 and s.deadline_seconds == 600
    assert s.files.editable == ("train.py",) and s.files.protected == ("prepare.py",)
    assert s.run.max_experiments == 2


def test_settings_are_frozen(tmp_path):
    s = load_settings(write(tmp_path, ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.run.command = "x"  # type: ignore[misc]
    hash(s)  # usable as a key
