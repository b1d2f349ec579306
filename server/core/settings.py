"""Workspace settings: nightlab.toml read into typed, frozen, validated dataclasses.

`load_settings(workspace, overrides)` is the one way in. Every bad value raises `SettingsError` naming the
file, the section and the key, so a person can fix it without reading code. `OVERRIDES` is the one table
of what a run may set over the file: `nightlab run`'s flags, `nightlab.loop.start`'s arguments and the
VS Code extension's settings all arrive as its flat names.

A folder without nightlab.toml that holds autoresearch's prepare.py, train.py and program.md is taken
as an autoresearch checkout, with defaults that fit it.

Must not import: anything but the standard library and core.validate (its checks and SettingsError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nightlab.server.core import autoresearch as ar
from nightlab.server.core.validate import LineageSettings, SettingsError, TomlChecker

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

SETTINGS_FILE = "nightlab.toml"
AUTORESEARCH_FILES = ar.FILES  # autoresearch's train.py trains for prepare.py's TIME_BUDGET: core/autoresearch.py
# In tokens mode the wall clock of a run is unknown up front: a fixed, generous deadline.
TOKENS_MODE_TIMEOUT = 600
# Tags become part of a branch and ref name (nightlab/<tag>, refs/nightlab/<tag>/<n>): keep them plain.
_TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class RunSettings:
    command: str = "python train.py"
    tag: str = ""
    max_experiments: int = 0  # 0 = no limit
    max_hours: float = 0.0  # 0 = no limit
    seed: int = 0
    max_cost_usd: float = 0.0  # 0 = no cap; the loop stops cleanly once the agent has cost this much
    slots: Any = "auto"  # "auto" (one per visible GPU, else one CPU slot) | N | ["0", "1"] | ["cpu", "cpu"]
    propose_ahead: bool = True  # draft the next proposal while a run trains
    sandbox: str = "auto"  # auto (bubblewrap where it runs, else said once) | required | off
    network: bool = False  # a sandboxed run reaches the network
    log_max_mb: float = 64.0  # each run's log keeps its head and tail within this, a marker where it is cut
    continue_lineage: bool = False  # the user's HEAD moved on: go on with the old lineage (loop/lineage.py)
    branch_prefix: str = "nightlab"  # the loop's branch is <prefix>/<tag>; "autoresearch" names it as autoresearch does
    executor: str = "local"  # local (this machine's slots) | ray (runs as Ray tasks: run/ray_launcher.py)
    ray_address: str = "auto"  # the cluster the loop joins: "auto" (the one this machine is a node of) or host:port


@dataclass(frozen=True)
class BudgetSettings:
    mode: str = "time"  # time | tokens
    seconds: float = 60
    tokens: int = 0
    kill_factor: float = 2.0
    grace_seconds: float = 60
    timeout_seconds: float = 0  # 0 = derived, see deadline_seconds
    smoke_fraction: float = 0.0  # >0: a short run of this share of the budget first, to catch crashes cheaply

    @property
    def deadline_seconds(self) -> float:
        """Wall clock after which a run is killed and counted as a timeout."""
        if self.timeout_seconds > 0:
            return float(self.timeout_seconds)
        if self.mode == "tokens":
            return float(TOKENS_MODE_TIMEOUT)
        return float(self.seconds * self.kill_factor + self.grace_seconds)


@dataclass(frozen=True)
class MetricSettings:
    name: str = "val_bpb"
    direction: str = "lower"  # lower | higher


@dataclass(frozen=True)
class FileSettings:
    # Tuples, not lists: the settings are frozen and hashable.
    editable: tuple[str, ...] = ("train.py",)
    protected: tuple[str, ...] = ("prepare.py",)
    program: str = "program.md"


@dataclass(frozen=True)
class AgentSettings:
    name: str = "offline"
    # Every other key of [agent] and its sub-tables ([agent.anthropic]), passed to the agent untouched.
    options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class PolicySettings:
    name: str = "noise"  # policy.DEFAULT_POLICY; strict is autoresearch's rule
    # Every other key of [policy] (repeats, z, ...), passed to the policy, which validates them.
    options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Settings:
    workspace: Path
    run: RunSettings = RunSettings()
    budget: BudgetSettings = BudgetSettings()
    metric: MetricSettings = MetricSettings()
    files: FileSettings = FileSettings()
    agent: AgentSettings = AgentSettings()
    policy: PolicySettings = PolicySettings()
    autoresearch: bool = False  # no nightlab.toml; recognised as an autoresearch checkout
    source: Path | None = None  # the nightlab.toml read, None when defaults were used
    lineages: tuple[LineageSettings, ...] = ()  # [[lineage]]: one loop each, all in one process (loop/swarm.py)

    @property
    def tag(self) -> str:
        """The loop's tag: branch nightlab/<tag>; an empty [run] tag means "main"."""
        return self.run.tag or "main"

    @property
    def branch(self) -> str:
        return f"{self.run.branch_prefix}/{self.tag}"

    @property
    def deadline_seconds(self) -> float:
        return self.budget.deadline_seconds

    @property
    def program_path(self) -> Path:
        return self.workspace / self.files.program


# --------------------------------------------------------------------------------------------------
# Loading


def load_settings(workspace: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """Read `<workspace>/nightlab.toml` (or recognise an autoresearch checkout), apply CLI overrides.

    overrides: a flat dict whose keys are OVERRIDES' names (the CLI's flags, the editor's start
    arguments in snake_case). None values are ignored (flag not given).
    """
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise SettingsError(f"{workspace}: no such folder")
    path = workspace / SETTINGS_FILE
    raw: dict[str, Any]
    autoresearch = False
    source: Path | None = None
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise SettingsError(f"{SETTINGS_FILE}: not valid TOML: {e}") from None
        except UnicodeDecodeError as e:
            raise SettingsError(f"{SETTINGS_FILE}: not UTF-8 text: {e}") from None
        source = path
    elif all((workspace / name).is_file() for name in AUTORESEARCH_FILES):
        autoresearch = True
        raw = ar.defaults(workspace)[0]  # TIME_BUDGET from its prepare.py, killed at 2x; uv, else a venv
    else:
        raise SettingsError(
            f"{workspace}: there is no {SETTINGS_FILE} here (and this is not an autoresearch checkout "
            f"with {', '.join(AUTORESEARCH_FILES)}); run `nightlab init` to create a workspace"
        )
    origins: dict[tuple[str, str], str] = {}
    raw = _apply_overrides(raw, overrides or {}, origins)
    checker = _Checker(SETTINGS_FILE if source else "settings", origins)
    settings = checker.settings(raw, workspace)
    return replace(settings, autoresearch=autoresearch, source=source)


@dataclass(frozen=True)
class Override:
    """One setting a run may set over nightlab.toml: [section] key, and what else it implies."""

    section: str
    key: str
    implies: tuple[tuple[str, Any], ...] = ()  # other keys of the section it sets (a budget picks its mode)


# The one table of overrides. Its names are `nightlab run`'s flags (--budget-tokens), and in camelCase
# `nightlab.loop.start`'s arguments (protocol.types.LoopStartOverrides' fields, budgetTokens) and the VS
# Code settings the extension sends (nightlab.budgetTokens); tests/test_overrides.py holds them to it.
OVERRIDES: dict[str, Override] = {
    "max_experiments": Override("run", "max_experiments"),
    "budget_seconds": Override("budget", "seconds", (("mode", "time"),)),
    "budget_tokens": Override("budget", "tokens", (("mode", "tokens"),)),
    "agent": Override("agent", "name"),
    "model": Override("agent", "model"),  # the Claude model; [agent.anthropic] model in the file gives way to it
    "tag": Override("run", "tag"),
    "command": Override("run", "command"),
    "policy": Override("policy", "name"),
    "slots": Override("run", "slots"),
    "max_cost_usd": Override("run", "max_cost_usd"),
    "continue_lineage": Override("run", "continue_lineage"),  # nightlab run --continue
    "branch_prefix": Override("run", "branch_prefix"),
    "executor": Override("run", "executor"),  # nightlab run --executor ray
    "ray_address": Override("run", "ray_address"),  # nightlab run --ray-address HOST:PORT
}


def _apply_overrides(
    raw: dict[str, Any], overrides: dict[str, Any], origins: dict[tuple[str, str], str]
) -> dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for name, value in overrides.items():
        if name not in OVERRIDES:
            raise SettingsError(f"unknown override {name!r}; known: {', '.join(sorted(OVERRIDES))}", option=name)
        if value is None:
            continue
        o = OVERRIDES[name]
        table = merged.setdefault(o.section, {})
        if not isinstance(table, dict):
            continue  # reported by the checker: [section] must be a table
        if name == "policy" and table.get("name", "noise") != value:
            table.clear()  # another policy: the file's options were for the one it names
        table[o.key] = value
        origins[(o.section, o.key)] = name
        if name == "model" and isinstance(table.get("anthropic"), dict):
            table["anthropic"] = {k: v for k, v in table["anthropic"].items() if k != "model"}
        for k, v in o.implies:
            table[k] = v
            origins[(o.section, k)] = name
    return merged


class _Checker(TomlChecker):
    """The sections of nightlab.toml, each checked key by key into its settings."""

    def slots(self, t: dict) -> Any:
        value = t.get("slots", "auto")
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        if (
            isinstance(value, list)
            and value
            and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)
        ):
            return tuple(str(v) for v in value)
        raise self.fail(
            "run", "slots", 'must be "auto", a number of slots, or a list like ["0", "1"] or ["cpu", "cpu"]', value
        )

    # -- sections --------------------------------------------------------------------------------
    def settings(self, raw: dict[str, Any], workspace: Path) -> Settings:
        sections = {"run", "budget", "metric", "files", "agent", "policy", "lineage"}
        for name in raw:
            if name not in sections:
                raise SettingsError(
                    f"{self.filename}: unknown section [{name}]; known sections: "
                    + ", ".join(f"[{s}]" for s in sorted(sections))
                )
        run, budget = self.run(self.table(raw, "run")), self.budget(self.table(raw, "budget"))
        metric, files = self.metric(self.table(raw, "metric")), self.files(self.table(raw, "files"))
        t = self.table(raw, "agent")
        agent = AgentSettings(
            name=self.string(t, "agent", "name", AgentSettings().name, nonempty=True),
            options={k: v for k, v in t.items() if k != "name"},
        )
        t = self.table(raw, "policy")
        policy = PolicySettings(
            name=self.string(t, "policy", "name", PolicySettings().name, nonempty=True),
            options={k: v for k, v in t.items() if k != "name"},
        )
        return Settings(
            workspace=workspace,
            run=run,
            budget=budget,
            metric=metric,
            files=files,
            agent=agent,
            policy=policy,
            lineages=self.lineages(raw.get("lineage")),
        )

    def run(self, t: dict[str, Any]) -> RunSettings:
        self.unknown(
            t,
            "run",
            {
                "command",
                "tag",
                "max_experiments",
                "max_hours",
                "seed",
                "max_cost_usd",
                "slots",
                "propose_ahead",
                "sandbox",
                "network",
                "log_max_mb",
                "continue_lineage",
                "branch_prefix",
                "executor",
                "ray_address",
            },
        )
        d = RunSettings()
        tag = self.string(t, "run", "tag", d.tag)
        if tag and (not _TAG_RE.match(tag) or tag.endswith(".lock") or ".." in tag):
            raise self.fail("run", "tag", "must be letters, digits, '.', '_' or '-' (it names a git branch)", tag)
        prefix = self.string(t, "run", "branch_prefix", d.branch_prefix, nonempty=True)
        if not _TAG_RE.match(prefix) or prefix.endswith(".lock") or ".." in prefix:
            raise self.fail(
                "run", "branch_prefix", "must be letters, digits, '.', '_' or '-' (it names a git branch)", prefix
            )
        return RunSettings(
            command=self.string(t, "run", "command", d.command, nonempty=True),
            tag=tag,
            max_experiments=self.integer(t, "run", "max_experiments", d.max_experiments),
            max_hours=float(self.number(t, "run", "max_hours", d.max_hours)),
            seed=self.integer(t, "run", "seed", d.seed, minimum=-(2**63)),
            max_cost_usd=float(self.number(t, "run", "max_cost_usd", d.max_cost_usd)),
            slots=self.slots(t),
            propose_ahead=self.boolean(t, "run", "propose_ahead", d.propose_ahead),
            sandbox=self.choice(t, "run", "sandbox", d.sandbox, ("auto", "required", "off")),
            network=self.boolean(t, "run", "network", d.network),
            log_max_mb=float(self.number(t, "run", "log_max_mb", d.log_max_mb, minimum=0.0625)),
            continue_lineage=self.boolean(t, "run", "continue_lineage", d.continue_lineage),
            branch_prefix=prefix,
            executor=self.choice(t, "run", "executor", d.executor, ("local", "ray")),
            ray_address=self.ray_address(t, d.ray_address),
        )

    def budget(self, t: dict[str, Any]) -> BudgetSettings:
        self.unknown(
            t,
            "budget",
            {"mode", "seconds", "tokens", "kill_factor", "grace_seconds", "timeout_seconds", "smoke_fraction"},
        )
        b = BudgetSettings()
        budget = BudgetSettings(
            mode=self.choice(t, "budget", "mode", b.mode, ("time", "tokens")),
            seconds=self.number(t, "budget", "seconds", b.seconds, positive=True),
            tokens=self.integer(t, "budget", "tokens", b.tokens),
            kill_factor=self.number(t, "budget", "kill_factor", b.kill_factor, minimum=1.0),
            grace_seconds=self.number(t, "budget", "grace_seconds", b.grace_seconds),
            timeout_seconds=self.number(t, "budget", "timeout_seconds", b.timeout_seconds),
            smoke_fraction=self.number(t, "budget", "smoke_fraction", b.smoke_fraction),
        )
        if budget.smoke_fraction >= 1:
            raise self.fail(
                "budget", "smoke_fraction", "must be below 1 (a share of the budget)", budget.smoke_fraction
            )
        if budget.mode == "tokens" and budget.tokens <= 0:
            raise self.fail("budget", "tokens", 'must be a positive whole number when mode = "tokens"', budget.tokens)
        return budget

    def metric(self, t: dict[str, Any]) -> MetricSettings:
        self.unknown(t, "metric", {"name", "direction"})
        m = MetricSettings()
        return MetricSettings(
            name=self.string(t, "metric", "name", m.name, nonempty=True),
            direction=self.choice(t, "metric", "direction", m.direction, ("lower", "higher")),
        )

    def files(self, t: dict[str, Any]) -> FileSettings:
        self.unknown(t, "files", {"editable", "protected", "program"})
        f = FileSettings()
        program = self.string(t, "files", "program", f.program, nonempty=True)
        self.relative("files", "program", program)
        files = FileSettings(
            editable=self.paths(t, "files", "editable", f.editable),
            protected=self.paths(t, "files", "protected", f.protected),
            program=program.strip().removeprefix("./"),
        )
        if not files.editable:
            raise self.fail("files", "editable", "must name at least one file", [])
        both = sorted(set(files.editable) & set(files.protected))
        if both:
            raise self.fail("files", "editable", f"and protected both list {', '.join(both)}", show=False)
        return files


def lineage_settings(settings: Settings, lineage: LineageSettings) -> Settings:
    """The base settings as one lineage runs them: its tag, budget and slots."""
    budget = settings.budget
    if lineage.budget_seconds is not None:
        budget = replace(budget, mode="time", seconds=lineage.budget_seconds)
    if lineage.budget_tokens is not None:
        budget = replace(budget, mode="tokens", tokens=lineage.budget_tokens)
    slots = lineage.slots if lineage.slots is not None else settings.run.slots
    return replace(settings, run=replace(settings.run, tag=lineage.name, slots=slots), budget=budget, lineages=())
