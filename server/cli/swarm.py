"""`nightlab run` with [[lineage]] tables: every lineage's loop in this process (loop/swarm.py), a line
per event prefixed with its lineage, each engine's control socket under its own tag's folder (so that
`nightlab status --tag gpu`, attach and stop reach one lineage); and `nightlab status`'s lineage lines,
read from the ledgers alone.
Must not import: pygls, lsprotocol, ray.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from rich.console import Console

from nightlab.protocol import events as ev
from nightlab.server.cli import control
from nightlab.server.cli.stopping import Stopper
from nightlab.server.core.settings import Settings

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _print(tag: str, event: dict[str, Any]) -> None:
    kind, e = event["type"], event.get("experiment") or {}
    if kind == ev.EXPERIMENT_STARTED:
        where = f"  on {e['node']}" if e.get("node") else ""
        console.print(f"{tag} #{e['number']} started: {e['description']}{where}", markup=False)
    elif kind == ev.EXPERIMENT_FINISHED:
        metric = f"{e['metric']:.6f}" if e.get("metric") is not None else "-"
        where = f"  on {e['node']}" if e.get("node") else ""
        console.print(f"{tag} #{e['number']} {e['status']}: {metric}  {e['description']}{where}", markup=False)
    elif kind == ev.MESSAGE:
        console.print(f"{tag} [{event['level']}] {event['text']}", markup=False)
    elif kind == ev.STATE and event["state"] in ("errored", "stopped"):
        console.print(f"{tag} loop {event['state']}: {event.get('reason', '')}", markup=False)


class _Together:
    """One lineage's engine as its control socket serves it, except that a client's stop, pause or resume
    is the whole swarm's (the lineages stop together); the engine's own stops (a slot's error) stay its."""

    def __init__(self, engine: Any, swarm: Any):
        self._engine, self._swarm = engine, swarm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def stop(self) -> None:
        self._swarm.stop()

    def pause(self) -> None:
        self._swarm.pause()

    def resume(self) -> None:
        self._swarm.resume()


def run(settings: Settings, detach: bool = False) -> bool:
    """Runs every lineage to its end; True when none of them errored. `detach`: the same command in a
    session of its own, returning once its first lineage's loop answers."""
    from nightlab.server.loop.swarm import Swarm, lineage_settings

    if detach:
        import sys

        control.detach(lineage_settings(settings, settings.lineages[0]), sys.argv[1:])
        return True

    swarm = Swarm(settings)
    swarm.subscribe(_print)
    names = ", ".join(swarm.engines)
    console.print(f"[bold]nightlab[/] {settings.workspace}  lineages {names}  agent {settings.agent.name}")
    stopper = Stopper(swarm.stop, err_console.print, lambda: console.show_cursor(True))

    async def main() -> None:
        stopper.install(asyncio.get_running_loop())
        async with contextlib.AsyncExitStack() as stack:
            for engine in swarm.engines.values():
                await stack.enter_async_context(control.serving(_Together(engine, swarm)))
            await stack.enter_async_context(control.watching_cluster(settings, list(swarm.engines.values())))
            await swarm.run()

    asyncio.run(main())
    stopper.rearm()
    for line in swarm.status_lines():
        console.print(line, markup=False)
    return all(e.state != "errored" for e in swarm.engines.values())


def status_lines(workspace: Path) -> list[str]:
    """A line per [[lineage]] of the workspace's settings (experiments, best, ports, whether its loop
    runs), then, with the Ray executor, the cluster's nodes and what is in use; none of them for a
    workspace with neither."""
    from nightlab.server.core.settings import SettingsError, load_settings

    try:
        settings = load_settings(workspace)
    except SettingsError:
        return []
    lines = [line for lin in settings.lineages for line in _lineage_lines(settings, lin.name)]
    if settings.run.executor == "ray":
        from nightlab.server.run.ray_cluster import cluster_lines

        lines += cluster_lines(settings.run.ray_address)
    return lines


def _lineage_lines(settings: Settings, name: str) -> list[str]:
    from nightlab.server.record.ledger import Ledger

    folder = Path(settings.workspace) / ".nightlab" / name
    if not (folder / "experiments.jsonl").exists():
        return [f"lineage {name}: not started"]
    ledger = Ledger(folder, metric_name=settings.metric.name)
    exps, best = ledger.experiments(), ledger.best(settings.metric.direction)
    text = f"lineage {name}: {len(exps)} experiments"
    if best is not None and best.metric is not None:
        text += f", best {settings.metric.name} {best.metric:.6f} (#{best.number} {best.description})"
    ports = [e for e in exps if e.port_of]
    if ports:
        kept = [e.port_of for e in ports if str(e.status) == "keep"]
        text += f"; {len(ports)} ports, kept: {', '.join(kept) or 'none'}"
    return [text, *(f"  {line}" for line in control.status_lines(folder, name))]
