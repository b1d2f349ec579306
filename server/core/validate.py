"""Checks of the values in a raw TOML dict, and the error a person gets for a bad one.

`TomlChecker` has one check per kind of value (string, whole number, number, choice, file paths inside
the workspace, boolean); settings.py's checker of nightlab.toml's sections builds on it. Every
`SettingsError` names the file, the section and the key, or the override that set the value.
Must not import: anything but the standard library.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(Exception):
    """A setting a person must fix; the message names the file, section and key. `option`: the override
    (an OVERRIDES name) the bad value came from, None when it came from the file."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class TomlChecker:
    """Checks values of a raw TOML dict; every message says where a bad value came from: the file, the
    section and the key, or the override (a CLI flag, an editor's start argument) that set it."""

    def __init__(self, filename: str, origins: dict[tuple[str, str], str]):
        self.filename = filename
        self.origins = origins

    def fail(self, section: str, key: str, what: str, value: Any = None, show: bool = True) -> SettingsError:
        option = self.origins.get((section, key))
        got = f", got {value!r}" if show else ""
        if option:
            return SettingsError(f"option {option}: [{section}] {key} {what}{got}", option=option)
        return SettingsError(f"{self.filename}: [{section}] {key} {what}{got}")

    def table(self, raw: dict[str, Any], section: str) -> dict[str, Any]:
        table = raw.get(section, {})
        if not isinstance(table, dict):
            raise SettingsError(f"{self.filename}: {section} must be a table [{section}], got {table!r}")
        return table

    def unknown(self, table: dict[str, Any], section: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                raise SettingsError(
                    f"{self.filename}: unknown key {key!r} in [{section}]; known keys: {', '.join(sorted(known))}"
                )

    # -- scalar checks ---------------------------------------------------------------------------
    def string(self, t: dict, section: str, key: str, default: str, nonempty: bool = False) -> str:
        v = t.get(key, default)
        if not isinstance(v, str):
            raise self.fail(section, key, "must be a string", v)
        if nonempty and not v.strip():
            raise self.fail(section, key, "must not be empty", v)
        return v

    def integer(self, t: dict, section: str, key: str, default: int, minimum: int = 0) -> int:
        v = t.get(key, default)
        # bool is an int in Python; `seed = true` is a mistake, not 1.
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(section, key, "must be a whole number", v)
        if v < minimum:
            raise self.fail(section, key, f"must be {minimum} or more", v)
        return v

    def number(
        self, t: dict, section: str, key: str, default: float, positive: bool = False, minimum: float = 0.0
    ) -> float:
        v = t.get(key, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (positive and v <= 0):
            raise self.fail(section, key, "must be a positive number" if positive else "must be a number", v)
        if v < minimum:
            raise self.fail(section, key, f"must be {minimum:g} or more", v)
        return v

    def choice(self, t: dict, section: str, key: str, default: str, choices: tuple[str, ...]) -> str:
        v = t.get(key, default)
        if v not in choices:
            raise self.fail(section, key, f"must be one of {' | '.join(choices)}", v)
        return v

    def paths(self, t: dict, section: str, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = t.get(key, list(default))
        if not isinstance(v, list) or not all(isinstance(p, str) and p.strip() for p in v):
            raise self.fail(section, key, "must be a list of file names", v)
        out = []
        for p in v:
            self.relative(section, key, p)
            out.append(p.strip().removeprefix("./"))
        return tuple(out)

    def boolean(self, t: dict, section: str, key: str, default: bool) -> bool:
        value = t.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(section, key, "must be true or false", value)
        return value

    def ray_address(self, t: dict, default: str) -> str:
        """[run] ray_address: "auto" or host:port of a cluster's head (not Ray Client's ray://, which Ray
        documents as unreliable for ML workloads: the loop runs on a node of the cluster instead)."""
        v = self.string(t, "run", "ray_address", default, nonempty=True).strip()
        if v.startswith("ray://"):
            raise self.fail(
                "run",
                "ray_address",
                "must be a cluster the loop runs on (host:port or auto), not Ray Client's ray://",
                v,
            )
        if v != "auto" and (v.count(":") != 1 or not v.rsplit(":", 1)[1].isdigit() or not v.split(":")[0]):
            raise self.fail("run", "ray_address", 'must be "auto" or host:port', v)
        return v

    def relative(self, section: str, key: str, p: str) -> None:
        # Paths are workspace-relative: the store maps them into the worktree and must not escape it.
        pp = Path(p.strip())
        if pp.is_absolute() or ".." in pp.parts:
            raise self.fail(section, key, "must be a path inside the workspace", p)

    def lineages(self, raw: Any) -> tuple[LineageSettings, ...]:
        """[[lineage]] tables: one loop each (its own tag, baseline, noise and frontier) in one process."""
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise SettingsError(f"{self.filename}: lineage must be tables [[lineage]], got {raw!r}")
        out: list[LineageSettings] = []
        for t in raw:
            self.unknown(t, "lineage", {"name", "resources", "budget_seconds", "budget_tokens", "slots", "focus"})
            name = self.string(t, "lineage", "name", "", nonempty=True)
            if not _NAME_RE.match(name) or name.endswith(".lock") or ".." in name:
                raise self.fail("lineage", "name", "must be letters, digits, '.', '_' or '-' (it is a tag)", name)
            if name in (lin.name for lin in out):
                raise self.fail("lineage", "name", "names two lineages", name)
            if "budget_seconds" in t and "budget_tokens" in t:
                raise self.fail("lineage", "budget_seconds", "and budget_tokens are two budgets: give one", show=False)
            seconds = self.number(t, "lineage", "budget_seconds", 0, positive=True) if "budget_seconds" in t else None
            tokens = self.integer(t, "lineage", "budget_tokens", 0, minimum=1) if "budget_tokens" in t else None
            slots = self.integer(t, "lineage", "slots", 0, minimum=1) if "slots" in t else None
            out.append(
                LineageSettings(
                    name=name,
                    resources=self.resources(t),
                    budget_seconds=float(seconds) if seconds is not None else None,
                    budget_tokens=tokens,
                    slots=slots,
                    focus=self.string(t, "lineage", "focus", "").strip(),
                )
            )
        return tuple(out)

    def resources(self, t: dict) -> tuple[tuple[str, float], ...]:
        """[[lineage]] resources: num_cpus, num_gpus and custom resources (a hardware class), each a number."""
        v = t.get("resources", {})
        if not isinstance(v, dict):
            raise self.fail("lineage", "resources", "must be a table like { num_gpus = 1 } or { classA = 1 }", v)
        for key, amount in v.items():
            self.number({f"resources.{key}": amount}, "lineage", f"resources.{key}", 0)
        return tuple(sorted((str(k), float(a)) for k, a in v.items()))


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class LineageSettings:
    """One [[lineage]]: a tag of its own whose runs ask the cluster for `resources` (loop/swarm.py)."""

    name: str
    resources: tuple[tuple[str, float], ...] = ()  # (num_cpus | num_gpus | a custom resource, amount)
    budget_seconds: float | None = None  # None: the [budget]'s
    budget_tokens: int | None = None
    slots: int | None = None  # None: [run] slots
    focus: str = ""  # a sentence for the agent's prompt ("initialisation and normalisation")

    def task_options(self) -> dict[str, Any]:
        """The Ray launcher's num_cpus, num_gpus and resources for this lineage's runs."""
        r = dict(self.resources)
        return {"num_cpus": r.pop("num_cpus", None), "num_gpus": r.pop("num_gpus", None), "resources": r}
