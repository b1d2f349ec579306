"""Lineages per hardware class in one loop process: `[[lineage]]` tables (core/validate.py's
LineageSettings), one Engine each, run side by side on one asyncio loop and stopped together. Each
lineage is a tag of its own (its branch, ledger, baseline, noise and frontier: a CPU model's bpb is not
comparable with an H100's), with its own budget and slots, and with the Ray executor its runs ask the
cluster for the lineage's resources. What one lineage keeps is ported to the others (loop/ports.py);
each agent is told what the others kept, every idea in flight anywhere, and its lineage's focus.
Must not import: pygls, lsprotocol, rich, typer, ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nightlab.server.core.settings import Settings, lineage_settings
from nightlab.server.core.types import ExperimentStatus
from nightlab.server.loop import ports
from nightlab.server.loop.engine import Engine
from nightlab.server.loop.launch import settings_launcher
from nightlab.server.run.sandbox import SandboxUnavailable


class Swarm:
    """One engine per lineage (`engines`, by name), with the ports between them."""

    def __init__(self, settings: Settings, *, agents: dict[str, Any] | None = None):
        self.settings = settings
        self.lineages = {lin.name: lin for lin in settings.lineages}
        self.engines: dict[str, Engine] = {
            name: Engine(lineage_settings(settings, lin), agent=(agents or {}).get(name))
            for name, lin in self.lineages.items()
        }
        for name, engine in self.engines.items():
            engine.proposer.focus = self.lineages[name].focus
            engine.proposer.others = self._in_flight_except(name)
            engine.proposer.elsewhere = self._kept_except(name)
        self.ports = ports.Ports(self.engines, lambda tag, text: self.engines[tag].message(text))

    # ------------------------------------------------------------------ control: fanned out

    async def run(self) -> None:
        for name, engine in self.engines.items():
            engine.launcher = engine.launcher or self._launcher(name, engine)
        tasks = [asyncio.create_task(engine.run()) for engine in self.engines.values()]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        failed = [t for t in done if t.exception() is not None]
        if failed:  # an engine that raised (not one that stopped, errored, saying why): end the others
            self.stop()
            if pending:
                await asyncio.wait(pending)
            raise failed[0].exception()  # type: ignore[misc]

    def stop(self) -> None:
        for engine in self.engines.values():
            engine.stop()

    def pause(self) -> None:
        for engine in self.engines.values():
            engine.pause()

    def resume(self) -> None:
        for engine in self.engines.values():
            engine.resume()

    def subscribe(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """`listener(lineage, event)` for every engine's events."""
        offs = [e.subscribe(lambda event, tag=tag: listener(tag, event)) for tag, e in self.engines.items()]

        def unsubscribe() -> None:
            for off in offs:
                off()

        return unsubscribe

    # ------------------------------------------------------------------ what the clients see

    def replicated_in(self, tag: str, number: int) -> list[str]:
        """The other lineages that kept a port of `tag #number` (empty until such a keep)."""
        label = f"{tag} #{number}"
        return ports.replicated(label, {t: e.ledger for t, e in self.engines.items() if t != tag})

    def status_lines(self) -> list[str]:
        """A line per lineage: its resources, experiments, best, and the ideas it replicated."""
        lines = []
        for name, engine in self.engines.items():
            lin, s = self.lineages[name], engine.settings
            best = engine.ledger.best(s.metric.direction)
            res = ", ".join(f"{k}={v:g}" for k, v in lin.resources) or "default resources"
            text = f"lineage {name} ({res}): {len(engine.ledger.experiments())} experiments"
            if best is not None and best.metric is not None:
                text += f", best {s.metric.name} {best.metric:.6f} (#{best.number} {best.description})"
            lines.append(text)
            for exp in engine.ledger.experiments():
                if exp.status == ExperimentStatus.KEEP and not exp.is_baseline:
                    where = self.replicated_in(name, exp.number)
                    if where:
                        lines.append(f"  {name} #{exp.number} replicated in {', '.join(where)}")
        return lines

    # ------------------------------------------------------------------ wiring

    def _launcher(self, name: str, engine: Engine) -> Any:
        """The lineage's launcher: the settings', asking the cluster for the lineage's resources."""
        try:
            launcher = settings_launcher(
                engine.settings, engine.store.toplevel, engine.command, lambda t: engine.message(t, "warning")
            )
        except SandboxUnavailable:
            return None  # the engine says so itself when it starts, and stops
        if engine.settings.run.executor == "ray":
            options = self.lineages[name].task_options()
            launcher = replace(launcher, **{k: v for k, v in options.items() if v is not None})
        return launcher

    def _in_flight_except(self, name: str) -> Callable[[], list[str]]:
        """The ideas in flight in the other lineages (running, or drafted): no idea trained twice at once."""
        return lambda: [d for tag, e in self.engines.items() if tag != name for d in e.proposer.in_flight()]

    def _kept_except(self, name: str) -> Callable[[], list[str]]:
        def kept() -> list[str]:
            out = []
            for tag, engine in self.engines.items():
                if tag == name:
                    continue
                metric = engine.settings.metric.name
                out += [
                    ports.kept_line(tag, e, metric)
                    for e in engine.ledger.experiments()
                    if e.status == ExperimentStatus.KEEP and not e.is_baseline
                ]
            return out[-20:]

        return kept
