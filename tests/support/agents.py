"""A scripted agent and a loop driver, shared by the engine-level tests."""

from __future__ import annotations

import asyncio

from nightlab.protocol import events as ev
from nightlab.server.core.settings import load_settings
from nightlab.server.loop.engine import Engine


class Scripted:
    """An agent that returns the proposals it was given, in order, and keeps the contexts it saw."""

    name = "scripted"

    def __init__(self, proposals):
        self.proposals = list(proposals)
        self.contexts = []

    async def propose(self, ctx):
        self.contexts.append(ctx)
        if not self.proposals:
            raise AssertionError("the agent was asked for more proposals than the test gave it")
        return self.proposals.pop(0)


def run_scripted(ws, proposals, n, **overrides):
    """The loop on `ws` for `n` experiments with a scripted agent: (engine, every event it emitted)."""
    engine = Engine(load_settings(ws, {"max_experiments": n, **overrides}), agent=Scripted(proposals))
    events: list[dict] = []
    engine.subscribe(events.append)
    asyncio.run(engine.run())
    return engine, events


def messages(events) -> list[str]:
    return [e["text"] for e in events if e["type"] == ev.MESSAGE]
