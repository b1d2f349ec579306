"""From the engine's records to the protocol's payloads: `experiment_payload`, `progress_payload` and
the notifications' params, from the plain dicts the engine's events carry (`Experiment.to_json()`,
`asdict(Progress)`), so that the protocol needs nothing from the server.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol, or anything outside the standard
library.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .types import ExperimentFinishedParams, ExperimentPayload, ExperimentStartedParams, ProgressPayload


def _number(value: Any) -> float | None:
    """A finite float, or None: JSON has no NaN or Infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def experiment_payload(exp: Mapping[str, Any], diff_summary: str = "") -> ExperimentPayload:
    """An `Experiment.to_json()` dict (a ledger record, or an event's "experiment") as a payload.
    `diff_summary`: the server's `diff_summary(exp["diff"])` (the protocol does not read diffs)."""
    decision = exp.get("decision") or {}
    usage = exp.get("usage") or {}
    timings = exp.get("timings") or {}
    metric = _number(exp.get("metric"))
    runs = exp.get("runs") or []
    memory = _number(exp.get("memory_gb"))
    return ExperimentPayload(
        number=int(exp["number"]),
        tag=str(exp.get("tag", "")),
        status=exp.get("status", "running"),
        description=str(exp.get("description", "")),
        hypothesis=str(exp.get("hypothesis", "")),
        metric=metric,
        delta=_number(exp.get("delta")),
        sigma=_number(decision.get("sigma")),
        z=_number(decision.get("z")),
        repeats=len(runs) if runs else (1 if metric is not None else None),
        memory_gb=memory if memory else None,  # 0.0: not measured yet
        duration_s=_number(timings.get("total_s")),
        agent=str(exp.get("agent", "")),
        cost_usd=_number(usage.get("cost_usd")),
        commit=str(exp.get("commit", "")),
        parent_commit=str(exp.get("parent_commit", "")),
        started_at=str(exp.get("started_at", "")),
        finished_at=exp.get("finished_at") or None,
        reason=str(exp.get("decision_reason", "")),
        slot=exp.get("slot") or None,
        diff_summary=diff_summary,
        baseline=exp.get("kind") == "baseline",
        rerun_of=exp.get("rerun_of") if isinstance(exp.get("rerun_of"), int) else None,
        review=exp.get("review") if exp.get("review") in ("accepted", "rejected") else None,
        reviewed_at=exp.get("reviewed_at") or None,
        lineage=exp["lineage"] if isinstance(exp.get("lineage"), int) else 1,
        budget_mode=exp.get("budget_mode") or None,
        budget_amount=_number(exp.get("budget_amount")),
        device=exp.get("device") or None,
        self_reported=exp["self_reported"] if isinstance(exp.get("self_reported"), bool) else None,
        node=exp.get("node") or None,
        port_of=exp.get("port_of") or None,
        # computed from the ledgers by the caller (loop/swarm.py's replicated_in), never stored in a record
        replicated_in=[str(t) for t in exp.get("replicated_in") or []],
    )


def experiment_started(
    exp: Mapping[str, Any], diff_summary: str = "", root: str | None = None
) -> ExperimentStartedParams:
    return ExperimentStartedParams(experiment=experiment_payload(exp, diff_summary), root=root)


def experiment_finished(
    exp: Mapping[str, Any], new_best: bool = False, diff_summary: str = "", root: str | None = None
) -> ExperimentFinishedParams:
    payload = experiment_payload(exp, diff_summary)
    verdict = payload.status if payload.status != "running" else "interrupted"
    return ExperimentFinishedParams(
        experiment=payload, verdict=verdict, reason=payload.reason, new_best=new_best, root=root
    )


def progress_payload(
    number: int, progress: Mapping[str, Any], stage: str = "run", root: str | None = None
) -> ProgressPayload:
    """A progress event's fields (`number`, `progress` = `asdict(Progress)`, `stage`) as a payload."""
    return ProgressPayload(
        number=int(number),
        step=int(progress.get("step") or 0),
        elapsed_s=_number(progress.get("elapsed_s")) or 0.0,
        loss=_number(progress.get("loss")),
        tok_per_s=_number(progress.get("tok_per_s")),
        mfu=_number(progress.get("mfu")),
        lr=_number(progress.get("lr")),
        fraction=_number(progress.get("fraction")),
        stage=stage or "run",
        root=root,
    )


def budget_text(mode: str, seconds: float, tokens: int) -> str:
    """LoopStatePayload.budget: "60 s" or "1,000,000 tokens"."""
    return f"{tokens:,} tokens" if mode == "tokens" else f"{seconds:g} s"
