"""The agent interface and the registry that builds an agent from its name in nightlab.toml.

An agent reads an `ExperimentContext` and returns a `Proposal` (description, hypothesis, edits). It never
writes to disk, runs anything or touches git: the engine applies the edits and the store commits them.

Built-in agents are imported lazily by name, so naming "offline" never imports an LLM SDK.
Must not import: git, torch, the store, runner, ledger or engine; no agent module at import time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from nightlab.server.core.types import ExperimentContext, Proposal


class AgentError(Exception):
    """An agent cannot propose (unknown name, bad options, nothing left to try, the API refused ...)."""


class ProposalError(AgentError):
    """The agent answered, but not with a valid proposal (even after being told what was wrong). The
    engine records the attempt as a crash that cost no training and goes on. `usage` is what it cost."""

    def __init__(self, message: str, usage: dict[str, Any] | None = None):
        super().__init__(message)
        self.usage = dict(usage or {})


@runtime_checkable
class Agent(Protocol):
    name: str

    async def propose(self, ctx: ExperimentContext) -> Proposal: ...


AgentFactory = Callable[[dict[str, Any], int], Agent]

# name -> "module:callable" (relative to this package) for built-ins (imported on first use), or a
# factory registered at run time.
_BUILTIN: dict[str, str] = {
    "offline": ".offline:OfflineAgent",
    "anthropic": ".anthropic_agent:AnthropicAgent",
    "claude": ".anthropic_agent:AnthropicAgent",
}
_REGISTERED: dict[str, AgentFactory] = {}


def register_agent(name: str, factory: AgentFactory) -> None:
    """Make `make_agent(name, ...)` call `factory(options, seed)`. Tests and plug-ins use this."""
    _REGISTERED[name] = factory


def agent_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def make_agent(name: str, options: dict[str, Any] | None = None, seed: int = 0) -> Agent:
    """Build the agent called `name` with its [agent] options (sub-tables included) and the base seed."""
    options = dict(options or {})
    if name in _REGISTERED:
        return _REGISTERED[name](options, seed)
    if name not in _BUILTIN:
        raise AgentError(f"unknown agent {name!r}; known agents: {', '.join(agent_names())}")
    module, _, attr = _BUILTIN[name].partition(":")
    factory = getattr(importlib.import_module(module, package=__package__), attr)
    return factory(options, seed)
