"""One path for overrides: `nightlab run`'s flags, `nightlab.loop.start`'s arguments (as METHODS.md lists
them) and the settings the VS Code extension sends all name settings.OVERRIDES' entries, and each is
accepted by load_settings. A key added on one side only fails here."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path

import pytest
import typer.main

from nightlab.protocol.types import LoopStartOverrides, camel
from nightlab.server.cli.commands import app
from nightlab.server.core.settings import OVERRIDES, load_settings

ROOT = Path(__file__).resolve().parents[1]
CLIENT_ONLY = {"python", "notifyOnNewBest", "inlayHints", "stopLoopOnExit"}  # the extension reads, never sends
VALID = {"executor": "ray", "rayAddress": "127.0.0.1:6379"}  # strings with a form of their own
SAMPLE = {"bool": True, "int": 2, "float": 1.5, "str": "x", "Any": "auto"}  # a value load_settings takes, by annotation


def extension_sends() -> set[str]:
    """The keys settings.ts's loopOverrides puts in nightlab.loop.start's argument (`out.<key> = ...`)."""
    source = (ROOT / "client-vscode/src/common/settings.ts").read_text()
    body = source[source.index("export function loopOverrides") :]
    body = body[: body.index("\n}\n")]
    return set(re.findall(r"\bout\.(\w+)\s*=", body))


def methods_md_lists() -> set[str]:
    """The fields of LoopStartOverrides as METHODS.md documents them, root aside."""
    text = (ROOT / "protocol/METHODS.md").read_text()
    block = text[text.index("export interface LoopStartOverrides {") :]
    block = block[: block.index("\n}")]
    return set(re.findall(r"^\s*(\w+)\??:", block, re.M)) - {"root"}


def wire_fields() -> dict[str, str]:
    """camelCase name -> annotation of LoopStartOverrides' fields, root aside."""
    return {camel(f.name): str(f.type) for f in fields(LoopStartOverrides) if f.name != "root"}


def test_the_extension_sends_settings_of_its_own_configuration():
    package = json.loads((ROOT / "client-vscode/package.json").read_text())
    configured = {k.removeprefix("nightlab.") for k in package["contributes"]["configuration"]["properties"]}
    sent = extension_sends()
    assert {"agent", "model", "policy", "budgetSeconds", "budgetTokens", "maxExperiments", "maxCostUsd"} <= sent
    assert sent <= configured, sent - configured
    assert configured - sent == CLIENT_ONLY, "a new nightlab.* setting: send it in loopOverrides or list it here"


@pytest.mark.parametrize("key", sorted(extension_sends() | methods_md_lists()))
def test_every_start_option_is_an_override_load_settings_takes(tmp_path, key):
    assert key in wire_fields(), f"{key} is not a field of protocol.types.LoopStartOverrides"
    annotation = wire_fields()[key]
    value = VALID.get(key) or next(v for t, v in SAMPLE.items() if annotation.startswith(t))
    flat = LoopStartOverrides.from_wire({key: value}).to_settings_overrides()
    (name,) = flat
    assert name in OVERRIDES, f"{key}: {name} is not in settings.OVERRIDES"
    (tmp_path / "nightlab.toml").write_text("")
    settings = load_settings(tmp_path, flat)
    o = OVERRIDES[name]
    section = getattr(settings, o.section)
    got = getattr(section, o.key) if hasattr(section, o.key) else section.options.get(o.key)  # [agent] model
    assert got == value, (key, got)


def test_methods_md_lists_what_the_protocol_defines():
    assert methods_md_lists() == set(wire_fields())


def test_every_cli_flag_of_run_is_an_override():
    run = typer.main.get_command(app).commands["run"]
    names = {p.name for p in run.params} - {"workspace", "plain", "detach"}  # how it runs, not what
    assert names <= set(OVERRIDES), names - set(OVERRIDES)
    assert set(wire_fields()) == {camel(n) for n in names}, "run's flags and the start options are the same set"
