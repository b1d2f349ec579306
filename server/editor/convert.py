"""The session's conversions: Start's overrides to `nightlab run`'s command line, the settings to what
the state shows, a progress event's dict to the record the editor's features read.
Must not import: pygls, lsprotocol, the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nightlab.server.core.settings import Settings
from nightlab.server.core.types import Progress


def model_of(s: Settings) -> str | None:
    """The Claude model nightlab.toml names, when the agent is anthropic."""
    if s.agent.name not in ("anthropic", "claude"):
        return None
    o = s.agent.options
    m = o.get("model") or (o.get("anthropic") or {}).get("model")
    return str(m) if m else None


def run_args(root: Path, overrides: dict[str, Any]) -> list[str]:
    """`nightlab run`'s command line for these overrides (settings.OVERRIDES names, as the CLI's flags)."""
    flags = {"budget_seconds": "--budget", "continue_lineage": "--continue"}
    args = ["run", "--workspace", str(root)]
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "slots" and not isinstance(value, int):
            if value == "auto":
                continue
            raise ValueError("slots: a number here; a list of GPUs goes in nightlab.toml")
        flag = flags.get(name, "--" + name.replace("_", "-"))
        if isinstance(value, bool):
            args.append(flag if value else "")
        else:
            args += [flag, str(value)]
    return [a for a in args if a]


def progress_from(p: dict[str, Any]) -> Progress:
    """A progress event's dict as the record the editor's features read."""

    def num(key: str) -> float | None:
        v = p.get(key)
        return float(v) if isinstance(v, (int, float)) else None

    return Progress(
        step=int(p.get("step") or 0),
        elapsed_s=float(p.get("elapsed_s") or 0.0),
        loss=num("loss"),
        tok_per_s=num("tok_per_s"),
        mfu=num("mfu"),
        lr=num("lr"),
        fraction=num("fraction"),
    )
