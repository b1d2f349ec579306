"""Keep / discard / crash rules, by name, so the loop's judgement is a setting, not code.

`strict` is autoresearch's rule: the first result (the baseline) is kept; afterwards only a result
strictly better than the best kept one. A run that did not end ok, or has no finite metric, is a crash.
A noise-aware policy (repeats, a noise floor, a significance test) registers beside it later.

Must not import: git, torch, the store, runner, ledger, agents or engine.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Protocol, runtime_checkable

from .types import Verdict


class PolicyError(Exception):
    pass


@runtime_checkable
class Policy(Protocol):
    name: str

    def decide(self, candidate: Optional[float], best: Optional[float], direction: str,
               run_status: str) -> tuple[Verdict, str]:
        """The verdict on one experiment and a one-line reason a person can read."""
        ...


def _check_direction(direction: str) -> None:
    if direction not in ("lower", "higher"):
        raise PolicyError(f"direction must be lower or higher, got {direction!r}")


def crash_reason(candidate: Optional[float], run_status: str) -> Optional[str]:
    """Why a result is a crash whatever the policy, or None when it is a usable result."""
    if run_status != "ok":
        return f"the run ended with status {run_status!r}"
    if candidate is None:
        return "the run printed no metric"
    if not math.isfinite(candidate):
        return f"the metric is {candidate}"
    return None


class StrictPolicy:
    """autoresearch: keep the baseline, then only what is strictly better than the best kept result."""

    name = "strict"

    def __init__(self, options: Optional[dict[str, Any]] = None):
        self.options = dict(options or {})

    def decide(self, candidate: Optional[float], best: Optional[float], direction: str,
               run_status: str) -> tuple[Verdict, str]:
        _check_direction(direction)
        why = crash_reason(candidate, run_status)
        if why:
            return "crash", why
        assert candidate is not None
        if best is None:
            return "keep", f"baseline: {candidate:.6f} is the first result"
        delta = candidate - best
        better = delta < 0 if direction == "lower" else delta > 0
        if better:
            return "keep", f"{candidate:.6f} is better than the best {best:.6f} ({delta:+.6f})"
        if delta == 0:
            return "discard", f"{candidate:.6f} equals the best {best:.6f}"
        return "discard", f"{candidate:.6f} is not better than the best {best:.6f} ({delta:+.6f})"


PolicyFactory = Callable[[dict[str, Any]], Policy]
_REGISTRY: dict[str, PolicyFactory] = {"strict": StrictPolicy}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make `make_policy(name)` call `factory(options)`."""
    _REGISTRY[name] = factory


def policy_names() -> list[str]:
    return sorted(_REGISTRY)


def make_policy(name: str, options: Optional[dict[str, Any]] = None) -> Policy:
    if name not in _REGISTRY:
        raise PolicyError(f"unknown policy {name!r}; known policies: {', '.join(policy_names())}")
    return _REGISTRY[name](dict(options or {}))
