"""Discoveries that spread with proof: a change one lineage keeps is offered to every other lineage as
its next proposal ("port gpu #12: ..."), re-applied to that lineage's own best files with the three-way
merge of changes/merge.py, and judged there by its own baseline and noise like any candidate. The
ledger links a port to its origin (`Experiment.port_of`); an origin counts as replicated only once a
port of it was kept in a second lineage, read from the ledgers, never before. An origin is offered to
a lineage at most once: never while that lineage has it (or a port of it) queued, running or recorded.
Also where a run's node is read back from (`node_of`: the Ray launcher's placement.json).
Must not import: the engine (at run time), ray, pygls, rich, typer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nightlab.protocol import events as ev
from nightlab.server.changes.hunks import apply_plans
from nightlab.server.changes.merge import conflict_text, merge
from nightlab.server.core.types import Experiment, ExperimentStatus, FileEdit, Proposal

if TYPE_CHECKING:
    from nightlab.server.loop.engine import Engine

PLACEMENT_FILE = "placement.json"  # run/ray_launcher.py's (not imported: ray is an optional extra)


def node_of(run_dir: Path) -> str:
    """The node a run folder's run was placed on ("10.0.0.5 (a1b2c3d4e5f6)"), "" for a local run."""
    try:
        p = json.loads((run_dir / PLACEMENT_FILE).read_text())
        return f"{p['node_ip']} ({str(p['node_id'])[:12]})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def origin(tag: str, exp: Experiment) -> str:
    """The idea a keep carries: the keep it ports ("gpu #12"), else itself."""
    return exp.port_of or f"{tag} #{exp.number}"


def replicated(label: str, ledgers: Mapping[str, Any]) -> list[str]:
    """The lineages (other than the origin's) that kept a port of `label` ("gpu #12")."""
    return [
        tag
        for tag, ledger in ledgers.items()
        if any(e.port_of == label and e.status == ExperimentStatus.KEEP for e in ledger.experiments())
    ]


def kept_line(tag: str, exp: Experiment, metric: str) -> str:
    """'gpu #12: Kaiming init, -0.021 bpb, z 4.1' (what one lineage shows another's agent)."""
    parts = [f"{tag} #{exp.number}: {exp.description}"]
    if exp.delta is not None:
        parts.append(f"{exp.delta:+.4g} {metric}")
    z = (exp.decision or {}).get("z")
    if isinstance(z, (int, float)):
        parts.append(f"z {z:.1f}")
    return ", ".join(parts)


def has(engine: Engine, label: str) -> bool:
    """Whether the lineage has the idea queued, running or recorded (as its own keep or a port of it)."""
    tag = engine.settings.tag
    if label.startswith(f"{tag} #"):
        return True
    if any(p.port_of == label for p in engine.proposer.pending):
        return True
    return any(e.port_of == label for e in engine.ledger.experiments())


def port(source: Engine, exp: Experiment, target: Engine) -> Proposal | str:
    """`exp` (kept in `source`) re-applied to `target`'s best files, or why it cannot be (a conflict)."""
    label = origin(source.settings.tag, exp)
    edits: list[FileEdit] = []
    for path in target.settings.files.editable:
        try:
            base = source.store.read_file(path, exp.parent_commit)
            theirs = source.store.read_file(path, exp.commit)
        except Exception:  # a file the source lineage does not edit
            continue
        ours = target.store.read_file(path)
        m = merge(base, theirs, ours)
        if m.of("conflict"):
            return f"{label} does not apply to {target.settings.tag}'s best: {conflict_text(path, m)}"
        new = apply_plans(ours, m.plans)
        if new != ours:
            edits.append(FileEdit(path, ours, new))  # the whole file: a best that moved since fails cleanly
    if not edits:
        return f"{target.settings.tag}'s best already has {label}"
    return Proposal(
        description=f"port {label}: {exp.description.removeprefix(f'port {label}: ')}",
        edits=edits,
        hypothesis=exp.hypothesis or f"what {label} found holds here too",
        agent="port",
        base=target.store.head(),
        port_of=label,
    )


class Ports:
    """Follows every lineage's engine; a keep (not a baseline) is offered first to each other lineage."""

    def __init__(self, engines: Mapping[str, Engine], message: Callable[[str, str], None]):
        self.engines, self.message = engines, message
        self._unsubscribe = [e.subscribe(self._listener(tag)) for tag, e in engines.items()]

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()

    def _listener(self, tag: str) -> Callable[[dict[str, Any]], None]:
        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") != ev.EXPERIMENT_FINISHED:
                return
            data = event["experiment"]
            if data.get("status") != "keep" or data.get("kind") == "baseline":
                return
            exp = self.engines[tag].ledger.get(int(data["number"]))
            if exp is not None:
                self.offer(tag, exp)

        return on_event

    def offer(self, tag: str, exp: Experiment) -> list[str]:
        """Queue `exp`'s port first in every other lineage that has not got the idea; their tags."""
        source, label, queued = self.engines[tag], origin(tag, exp), []
        for other, target in self.engines.items():
            if other == tag or has(target, label):
                continue
            proposal = port(source, exp, target)
            if isinstance(proposal, str):
                self.message(other, f"{proposal}: not ported")
                continue
            target.proposer.pending.insert(0, proposal)
            queued.append(other)
            self.message(other, f"{proposal.description}: queued")
        return queued
