"""The Ray cluster as the loop's clients see it: its live nodes (address, id, resources), what they have
together, and what the runs hold now (a run's resources: a slot). `cluster_lines` is `nightlab status`'s
view; `watch` runs in the loop process (the cluster's driver) and tells the loop's clients, through the
engine's `cluster` event, whenever the view changes: a node that joins or goes, a slot taken or freed.
Must not import: git, torch, the ledger, the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import ray

from nightlab.protocol.types import ClusterNode, ClusterPayload
from nightlab.server.run.ray_launcher import connect

log = logging.getLogger(__name__)
WATCH_S = 5.0  # how often the loop looks at the cluster (a call to Ray's control store)


def _shown(resources: Mapping[str, float]) -> dict[str, float]:
    """Without Ray's bookkeeping entries (node:<ip>, memory, the object store)."""
    return {k: float(v) for k, v in resources.items() if not k.startswith(("node:", "memory", "object_store"))}


def view(address: str) -> ClusterPayload:
    """The cluster now (blocking: a few calls to Ray); a cluster that does not answer is said in `error`."""
    try:
        connect(address)
        nodes, total, free = ray.nodes(), _shown(ray.cluster_resources()), ray.available_resources()
    except Exception as exc:
        return ClusterPayload(address=address, error=f"not reachable ({type(exc).__name__}: {exc})")
    live = [
        ClusterNode(
            id=str(n.get("NodeID")),
            address=str(n.get("NodeManagerAddress") or ""),
            resources=_shown(n.get("Resources") or {}),
        )
        for n in nodes
        if n.get("Alive")
    ]
    in_use = {k: max(0.0, v - float(free.get(k, 0.0))) for k, v in total.items()}
    return ClusterPayload(
        address=address, nodes=sorted(live, key=lambda n: (n.address, n.id)), total=total, in_use=in_use
    )


def cluster_lines(address: str) -> list[str]:
    """`nightlab status`'s view of the cluster: each live node and what it has, then what is in use."""
    v = view(address)
    if v.error:
        return [f"ray cluster at {address}: {v.error}"]
    lines = []
    for n in v.nodes:
        has = ", ".join(f"{k} {amount:g}" for k, amount in sorted(n.resources.items()))
        lines.append(f"node {n.address} ({n.id[:12]}): {has}")
    used = ", ".join(f"{k} {v.in_use.get(k, 0.0):g}/{total:g}" for k, total in sorted(v.total.items()))
    return [*lines, f"in use: {used}"]


async def watch(address: str, emit: Callable[[ClusterPayload], None], every: float = WATCH_S) -> None:
    """Looks at the cluster every `every` s (in a thread: Ray's calls block) and calls `emit` with each
    view that differs from the last; runs until cancelled."""
    last: ClusterPayload | None = None
    while True:
        now = await asyncio.to_thread(view, address)
        if now != last:
            try:
                emit(now)
            except Exception:  # a listener's failure must not end the watch (nor the loop)
                log.exception("telling the clients about the cluster failed")
            last = now
        await asyncio.sleep(every)
