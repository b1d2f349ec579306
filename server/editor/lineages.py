"""A workspace's [[lineage]] tables as the editor shows them (loop/swarm.py runs them in one loop process,
each a tag of its own): per lineage its experiments, best, baseline, whether its loop runs, and where its
ideas came from and held (ports tried and kept here; its own keeps another lineage kept a port of).
Read from the ledgers alone, each parsed once per session and re-read only when it grew.
Must not import: pygls, lsprotocol, the engine.
"""

from __future__ import annotations

from pathlib import Path

from nightlab.protocol.types import BestPayload, LineagePayload
from nightlab.server.core.settings import Settings
from nightlab.server.core.types import ExperimentStatus
from nightlab.server.loop.ports import replicated
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.lock import loop_owner


class Lineages:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._ledgers: dict[str, Ledger] = {}

    def ledger(self, settings: Settings, name: str) -> Ledger:
        folder = self.root / ".nightlab" / name
        if name not in self._ledgers or self._ledgers[name].dir != folder:
            self._ledgers[name] = Ledger(folder, settings.metric.name)
        return self._ledgers[name]

    def payloads(self, settings: Settings) -> list[LineagePayload]:
        """One per [[lineage]] of `settings` (the workspace's own, not one lineage's), in their order."""
        ledgers = {lin.name: self.ledger(settings, lin.name) for lin in settings.lineages}
        out = []
        for lin in settings.lineages:
            ledger = ledgers[lin.name]
            exps = ledger.experiments()
            best = ledger.best(settings.metric.direction)
            best = best if best is not None and best.metric is not None else None
            baseline = next((e for e in ledger.current() if e.is_baseline and e.metric is not None), None)
            ports = [e for e in exps if e.port_of]
            others = {t: led for t, led in ledgers.items() if t != lin.name}
            own_keeps = [e for e in exps if e.status == ExperimentStatus.KEEP and not e.is_baseline and not e.port_of]
            out.append(
                LineagePayload(
                    name=lin.name,
                    resources=", ".join(f"{k}={v:g}" for k, v in lin.resources),
                    focus=lin.focus,
                    experiments=len(exps),
                    best=BestPayload(best.number, best.metric)
                    if best is not None and best.metric is not None
                    else None,
                    baseline=baseline.metric if baseline else None,
                    running=bool(loop_owner(ledger.dir)),
                    ports=len(ports),
                    ports_kept=sum(1 for e in ports if e.status == ExperimentStatus.KEEP),
                    replicated=sum(1 for e in own_keeps if replicated(f"{lin.name} #{e.number}", others)),
                )
            )
        return out
