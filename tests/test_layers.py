"""The layers, read from the source with `ast` (nothing is imported): which nightlab package may import which,
who may import which third-party library, no import cycle in server/, and no test module importing another.

LAYERS says what each layer may import besides itself; an import inside a function (a lazy one) counts like
one at the top, and so does one under `if TYPE_CHECKING:` (a type from above is still a dependency on it);
only the cycle check leaves TYPE_CHECKING imports out, since they never run. The checker is
tests/support/layers.py; the planted trees at the end check that it finds what it should."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from support.layers import (
    import_cycles,
    imports_of_test_modules,
    layer_of,
    layer_violations,
    owner_violations,
    scan,
    stdlib_only_violations,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"nightlab.server": "server", "nightlab.protocol": "protocol", "nightlab.trainer": "trainer"}

# layer -> the modules it is made of (longest prefix wins)
PREFIXES = {
    "server": "nightlab.server",  # server/__init__.py and __main__.py: the entry point, above every layer
    "core": "nightlab.server.core",
    "changes": "nightlab.server.changes",
    "run": "nightlab.server.run",
    "record": "nightlab.server.record",
    "agents": "nightlab.server.agents",
    "loop": "nightlab.server.loop",
    "editor": "nightlab.server.editor",
    "lsp": "nightlab.server.lsp",
    "control": "nightlab.server.control",
    "cli": "nightlab.server.cli",
    "protocol": "nightlab.protocol",
    "trainer": "nightlab.trainer",
    # the template scripts run in their own process, from the workspace: nothing imports them as modules
    "templates": ("nightlab.trainer.prepare", "nightlab.trainer.train"),
}

_BELOW_LOOP = {"core", "changes", "run", "record", "agents"}
LAYERS = {  # layer -> the other layers it may import
    "core": set(),  # the standard library only (THIRD_PARTY below)
    "changes": {"core"},
    "run": {"core", "protocol"},
    "record": {"core", "changes"},
    "agents": {"core", "changes"},
    "loop": _BELOW_LOOP | {"protocol"},
    "editor": _BELOW_LOOP | {"loop", "control", "protocol"},
    # the loop process's control endpoint and its clients' side (the CLI's attach, the language server)
    "control": {"core", "record", "loop", "protocol"},
    "lsp": _BELOW_LOOP | {"loop", "editor", "control", "protocol"},
    # every layer; lsp because the `lsp` command starts the server (a lazy import)
    "cli": _BELOW_LOOP | {"loop", "editor", "lsp", "control", "protocol", "trainer"},
    "server": _BELOW_LOOP | {"loop", "editor", "lsp", "cli", "control", "protocol", "trainer"},
    "protocol": set(),  # the contract with clients: nothing of the server, the trainer, pygls or lsprotocol
    "trainer": set(),  # nothing of the server
    "templates": set(),
}

# real imports that break LAYERS today, being fixed elsewhere: layer -> why (the case flips when fixed)
KNOWN_BREAKS: dict[str, str] = {}

# real import cycles in server/ today, being fixed elsewhere: their modules -> why (each case flips when fixed)

# third-party library -> the only layers that may import it
OWNERS = {
    "pygls": {"lsp"},
    "lsprotocol": {"lsp"},
    "rich": {"cli"},
    "typer": {"cli"},
    "matplotlib": {"cli"},
    "anthropic": {"agents"},
    "ray": {"run"},  # run/ray_launcher.py: the Ray executor ([run] executor = "ray")
}
# layers that import only the standard library (and nightlab, as LAYERS says), plus these
STDLIB_ONLY = {"core": {"tomli"}, "protocol": set()}


@pytest.fixture(scope="module")
def modules():
    return scan(ROOT, PACKAGES)


def report(messages: list[str]) -> str:
    return "\n".join(messages)


def test_every_module_has_a_layer(modules):
    assert all(layer_of(name, PREFIXES) in LAYERS for name in modules)
    assert {layer_of(name, PREFIXES) for name in modules} == set(LAYERS)


@pytest.mark.parametrize(
    "layer",
    [
        pytest.param(layer, marks=pytest.mark.xfail(strict=True, reason=KNOWN_BREAKS[layer]))
        if layer in KNOWN_BREAKS
        else layer
        for layer in LAYERS
    ],
)
def test_layer_imports_only_what_the_table_allows(modules, layer):
    assert not (found := layer_violations(modules, PREFIXES, LAYERS, only=layer)), report(found)


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_third_party_library_has_one_owner(modules, library):
    assert not (found := owner_violations(modules, PREFIXES, OWNERS[library], [library])), report(found)


@pytest.mark.parametrize("layer", sorted(STDLIB_ONLY))
def test_layer_imports_only_the_standard_library(modules, layer):
    assert not (found := stdlib_only_violations(modules, PREFIXES, layer, STDLIB_ONLY[layer])), report(found)


def test_no_import_cycle_in_the_server(modules):
    found = import_cycles(modules, "nightlab.server")
    assert not found, report([str(cycle) for cycle in found])


@pytest.mark.parametrize("path", sorted((ROOT / "protocol").glob("*.py")), ids=lambda p: p.name)
def test_protocol_modules_say_what_they_must_not_import_and_stay_small(path):
    source = path.read_text(encoding="utf-8")
    assert "Must not import" in (ast.get_docstring(ast.parse(source)) or ""), f"{path.name}: the docstring says what"
    assert len(source.splitlines()) <= 400, path.name


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60
SIZED = [p for d in ("server", "protocol", "trainer") for p in sorted((ROOT / d).rglob("*.py"))]


@pytest.mark.parametrize("path", SIZED, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    """A module of at most 400 lines, functions of at most 60 (nested functions count in their parent):
    what a reader can hold at once."""
    source = path.read_text(encoding="utf-8")
    assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(source.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(ROOT)}: " + ", ".join(long)


def test_no_test_module_imports_another():
    assert not (found := imports_of_test_modules(ROOT / "tests")), report(found)


# ---------------------------------------------------------------------------- the checker on planted trees


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


PLANTED = {
    "server/__init__.py": "",
    "server/core/__init__.py": "",
    "server/core/types.py": "import dataclasses\n",
    "server/core/settings.py": """\
        import json

        from nightlab.server.core.types import dataclasses


        def load():
            from nightlab.server.run.runner import Runner  # a lazy import counts
            import yaml
            return Runner
        """,
    "server/run/__init__.py": "",
    "server/run/runner.py": """\
        from nightlab.server.core import types
        from nightlab.server.run import follow

        Runner = object
        """,
    "server/run/follow.py": """\
        from typing import TYPE_CHECKING

        if TYPE_CHECKING:
            from nightlab.server.run.runner import Runner  # never runs: no cycle


        def tail():
            from nightlab.server.run.slots import spec  # lazy, but still a cycle
        """,
    "server/run/slots.py": "from . import follow\nimport rich\n",
    "protocol/__init__.py": "",
    "protocol/types.py": """\
        from .. import server
        from nightlab.server.core.types import dataclasses
        from ... import up
        """,
}
PLANTED_PREFIXES = {
    "server": "nightlab.server",
    "core": "nightlab.server.core",
    "run": "nightlab.server.run",
    "protocol": "nightlab.protocol",
}
PLANTED_LAYERS = {"server": {"core", "run"}, "core": set(), "run": {"core", "protocol"}, "protocol": set()}
PLANTED_PACKAGES = {"nightlab.server": "server", "nightlab.protocol": "protocol"}


@pytest.fixture
def planted(tmp_path):
    return scan(plant(tmp_path, PLANTED), PLANTED_PACKAGES)


def test_checker_names_file_line_and_import_of_a_layer_break(planted):
    assert layer_violations(planted, PLANTED_PREFIXES, PLANTED_LAYERS) == [
        "server/core/settings.py:7 imports nightlab.server.run.runner (core may import: nothing of nightlab)",
        "protocol/types.py:1 imports nightlab.server (protocol may import: nothing of nightlab)",
        "protocol/types.py:2 imports nightlab.server.core.types (protocol may import: nothing of nightlab)",
        "protocol/types.py:3 imports ...up (a relative import above the top package)",
    ]
    assert layer_violations(planted, PLANTED_PREFIXES, PLANTED_LAYERS, only="run") == []


def test_checker_names_every_import_of_a_cycle(planted):
    assert [str(cycle) for cycle in import_cycles(planted, "nightlab.server")] == [
        "import cycle among nightlab.server.run.follow, nightlab.server.run.slots: "
        "server/run/follow.py:8 imports nightlab.server.run.slots (lazily); "
        "server/run/slots.py:1 imports nightlab.server.run.follow"
    ]


def test_checker_leaves_out_type_checking_imports_from_cycles_only(tmp_path):
    tree = scan(
        plant(
            tmp_path,
            {
                "server/__init__.py": "",
                "server/a.py": "import nightlab.server.b\n",
                "server/b.py": (
                    "import typing\nif typing.TYPE_CHECKING:\n    import nightlab.server.a\nelse:\n    import os\n"
                ),
            },
        ),
        {"nightlab.server": "server"},
    )
    assert import_cycles(tree) == []
    b = [(i.module, i.type_only) for i in tree["nightlab.server.b"].imports]
    assert b == [("typing", False), ("nightlab.server.a", True), ("os", False)]


def test_checker_finds_third_party_imports_outside_their_owner_and_in_stdlib_only_layers(planted):
    assert owner_violations(planted, PLANTED_PREFIXES, {"cli"}, ["rich"]) == [
        "server/run/slots.py:2 imports rich (only cli may import rich)"
    ]
    assert stdlib_only_violations(planted, PLANTED_PREFIXES, "core", {"tomli"}) == [
        "server/core/settings.py:8 imports yaml (core may import only the standard library, tomli)"
    ]


def test_checker_finds_a_test_module_importing_another(tmp_path):
    plant(
        tmp_path,
        {
            "tests/test_a.py": "from test_b import helper\nfrom support.workspace import git\n",
            "tests/test_b.py": "import conftest\n",
            "tests/support/workspace.py": "import subprocess\n",
        },
    )
    assert imports_of_test_modules(tmp_path / "tests") == [
        "tests/test_a.py:1 imports test_b (a test module; shared helpers go in tests/support/)",
        "tests/test_b.py:1 imports conftest (a test module; shared helpers go in tests/support/)",
    ]
