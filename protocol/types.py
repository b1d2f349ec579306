"""The payloads that travel between the language server and its clients, as plain dataclasses.

Python names are snake_case; on the wire every key is camelCase (`memory_gb` -> `memoryGb`). Each payload
has `to_wire()` (a JSON-ready dict) and `from_wire(data)` (checks types, fills defaults, ignores keys it
does not know so that an older reader survives a newer writer); both live in wire.py. `generate_ts.py`
renders the TypeScript mirror from these annotations, so a field is added here and nowhere else.

The converters at the end (`experiment_payload`, `progress_payload`, ...) take the plain dicts the
engine's events carry (`Experiment.to_json()`, `asdict(Progress)`), so this module needs nothing from
the server.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol, or anything outside the standard
library (the payloads are the one thing every side shares).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .wire import Wire, WireError, camel

__all__ = [  # WireError and camel re-exported: a handler needs one import for payloads and their errors
    "ALIASES",
    "AcceptArgs",
    "AcceptResult",
    "BestPayload",
    "CurvePoint",
    "ExperimentArgs",
    "ExperimentCommandResult",
    "ExperimentCurve",
    "ExperimentCurveParams",
    "ExperimentDiff",
    "ExperimentDiffParams",
    "ExperimentFinishedParams",
    "ExperimentPayload",
    "ExperimentStartedParams",
    "ExperimentStatus",
    "ExperimentsPage",
    "ExperimentsParams",
    "FileDiff",
    "HunkInfo",
    "LoopArgs",
    "LoopCommandResult",
    "LoopStartOverrides",
    "LoopState",
    "LoopStatePayload",
    "MetricDirection",
    "PAYLOADS",
    "ProgressPayload",
    "Review",
    "Verdict",
    "Wire",
    "WireError",
    "budget_text",
    "camel",
    "experiment_finished",
    "experiment_payload",
    "experiment_started",
    "progress_payload",
]

# ---------------------------------------------------------------------------- named literal types
# Rendered as TypeScript union types under these names (see ALIASES).

LoopState = Literal["idle", "proposing", "running", "deciding", "paused", "stopped", "errored"]  # events.STATES
ExperimentStatus = Literal["running", "keep", "discard", "crash", "interrupted"]
Verdict = Literal["keep", "discard", "crash", "interrupted"]  # a finished experiment's status
MetricDirection = Literal["lower", "higher"]
Review = Literal["accepted", "rejected"]  # the person's verdict on an experiment

ALIASES: dict[str, Any] = {
    "LoopState": LoopState,
    "ExperimentStatus": ExperimentStatus,
    "Verdict": Verdict,
    "MetricDirection": MetricDirection,
    "Review": Review,
}


# ---------------------------------------------------------------------------- payloads


@dataclass
class ExperimentPayload(Wire):
    """One experiment as a client shows it: the ledger record, flattened."""

    number: int
    tag: str
    status: ExperimentStatus
    description: str
    hypothesis: str = ""
    metric: float | None = None  # the metric (mean of its runs); null while running or after a crash
    delta: float | None = None  # metric minus the best before it; negative is better when lower is better
    sigma: float | None = None  # the noise estimate the verdict used
    z: float | None = None  # the gain in standard errors
    repeats: int | None = None  # training runs behind the metric
    memory_gb: float | None = None
    duration_s: float | None = None  # wall clock of all its runs
    agent: str = ""
    cost_usd: float | None = None  # what the agent's proposal cost
    commit: str = ""
    parent_commit: str = ""
    started_at: str = ""  # ISO 8601
    finished_at: str | None = None
    reason: str = ""  # why it was kept or discarded, or how it crashed
    slot: str | None = None  # the slot that ran it ("cpu0", "gpu1", ...)
    diff_summary: str = ""  # one line: "train.py: +3 -1 lines"
    baseline: bool = False  # the unchanged code, run to measure where the loop starts
    rerun_of: int | None = None  # the experiment this one runs again
    review: Review | None = None  # the person's verdict, when they gave one


@dataclass
class ProgressPayload(Wire):
    """A progress sample of a running experiment."""

    number: int
    step: int
    elapsed_s: float  # budgeted training time so far
    loss: float | None = None
    tok_per_s: float | None = None
    mfu: float | None = None  # percent of the device's peak FLOP/s
    lr: float | None = None  # as the script reports it (the default train.py: the schedule's multiplier)
    fraction: float | None = None  # 0..1 of the budget, when known
    stage: str = "run"  # "run", "smoke", or "repeat-<k>" for the k-th confirmation run
    root: str | None = None  # the workspace folder (a path)


@dataclass
class BestPayload(Wire):
    number: int
    metric: float


@dataclass
class LoopStatePayload(Wire):
    """Where the loop of one workspace folder stands."""

    state: LoopState
    reason: str = ""  # what it does now, or why it stopped
    tag: str = ""
    agent: str = ""
    budget: str = ""  # "60 s" or "1,000,000 tokens" per experiment
    metric_name: str = "val_bpb"
    direction: MetricDirection = "lower"
    best: BestPayload | None = None
    baseline: float | None = None  # the baseline's metric
    experiments_run: int = 0
    running: list[int] = field(default_factory=list)  # numbers of the experiments training now
    cost_usd: float = 0.0  # spent by the agent on this tag so far
    root: str | None = None  # the workspace folder (a path)


@dataclass
class ExperimentStartedParams(Wire):
    experiment: ExperimentPayload
    root: str | None = None  # the workspace folder (a path)


@dataclass
class ExperimentFinishedParams(Wire):
    experiment: ExperimentPayload
    verdict: Verdict
    reason: str = ""
    new_best: bool = False  # kept, and now the best
    root: str | None = None  # the workspace folder (a path)


@dataclass
class ExperimentsParams(Wire):
    offset: int | None = None  # default 0
    limit: int | None = None  # default 100
    status: ExperimentStatus | None = None  # only experiments with this status
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class ExperimentsPage(Wire):
    total: int  # experiments that match, over all pages
    offset: int
    experiments: list[ExperimentPayload]


@dataclass
class ExperimentDiffParams(Wire):
    number: int
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class HunkInfo(Wire):
    """One hunk of a file's change, as `nightlab.experiment.accept` numbers them."""

    index: int  # 0-based, in the order of the file's diff: accept's `hunks` takes these
    parent_start: int  # 0-based line range [start, end) in the parent's text (start == end: an insertion)
    parent_end: int
    experiment_start: int  # 0-based first line of the new lines in the experiment's text
    experiment_lines: int
    summary: str  # "MATRIX_LR = 0.02 -> 0.04" or "+3 -1 lines"


@dataclass
class FileDiff(Wire):
    path: str  # relative to the workspace root
    parent: str | None = None  # the text at the parent commit; null when the experiment created the file
    experiment: str | None = None  # the text at the experiment's commit; null when it deleted the file
    hunks: list[HunkInfo] = field(default_factory=list)


@dataclass
class ExperimentDiff(Wire):
    number: int
    parent: str  # the parent commit
    commit: str
    files: list[FileDiff]


@dataclass
class ExperimentCurveParams(Wire):
    number: int
    stage: str = "run"  # "run", "smoke" or "repeat-<k>": which of the experiment's runs
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class CurvePoint(Wire):
    step: int
    elapsed_s: float  # budgeted training time so far
    loss: float


@dataclass
class ExperimentCurve(Wire):
    number: int
    stage: str
    points: list[CurvePoint]  # in order of step; empty when the run recorded no loss


@dataclass
class LoopStartOverrides(Wire):
    """Settings for this run of the loop, over nightlab.toml; each left out keeps the file's value."""

    agent: str | None = None
    budget_seconds: float | None = None  # sets a time budget
    budget_tokens: int | None = None  # sets a token budget
    max_experiments: int | None = None
    tag: str | None = None
    policy: str | None = None  # keep/discard rule by name: "noise" or "strict"
    max_cost_usd: float | None = None  # stop once the agent has cost this much
    model: str | None = None  # the Claude model, when the agent is anthropic
    slots: Any | None = None  # "auto", a number, or a list of GPU ids ("0", "1") or "cpu"s
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one

    def to_settings_overrides(self) -> dict[str, Any]:
        """The flat dict `nightlab.server.core.settings.load_settings` takes (the CLI's flags); root is not one."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "root" and getattr(self, f.name) is not None
        }


@dataclass
class LoopArgs(Wire):
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class ExperimentArgs(Wire):
    number: int
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class AcceptArgs(Wire):
    number: int
    path: str | None = None  # only this file (relative to the workspace root); left out: every file
    hunks: list[int] | None = None  # 0-based indices among each file's hunks; left out: all of them
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class LoopCommandResult(Wire):
    state: LoopState  # the state right after the command; `message` says what follows ("pausing ...")
    message: str = ""
    tag: str = ""


@dataclass
class AcceptResult(Wire):
    number: int
    files: list[str] = field(default_factory=list)  # the files the editor changed
    already_applied: list[int] = field(default_factory=list)  # hunks found already in the file, left alone
    message: str = ""


@dataclass
class ExperimentCommandResult(Wire):
    number: int
    message: str = ""


# Every payload, in the order the TypeScript mirror lists them.
PAYLOADS: tuple[type, ...] = (
    ExperimentPayload,
    ProgressPayload,
    BestPayload,
    LoopStatePayload,
    ExperimentStartedParams,
    ExperimentFinishedParams,
    ExperimentsParams,
    ExperimentsPage,
    ExperimentDiffParams,
    HunkInfo,
    FileDiff,
    ExperimentDiff,
    ExperimentCurveParams,
    CurvePoint,
    ExperimentCurve,
    LoopStartOverrides,
    LoopArgs,
    ExperimentArgs,
    AcceptArgs,
    LoopCommandResult,
    AcceptResult,
    ExperimentCommandResult,
)


# ---------------------------------------------------------------------------- converters from the engine's events


def _number(value: Any) -> float | None:
    """A finite float, or None: JSON has no NaN or Infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _diff_summary(diff: str) -> str:
    """'train.py: +3 -1 lines; prepare.py: +1 -0 lines' from a unified diff (the server's
    edits.diff_summary says more, e.g. the changed constants; pass it in when at hand)."""
    counts: dict[str, list[int]] = {}
    path = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            name = line[4:].strip()
            path = name[2:] if name.startswith("b/") else name
            counts.setdefault(path, [0, 0])
        elif line.startswith("--- ") or line.startswith("diff ") or path is None:
            continue
        elif line.startswith("+"):
            counts[path][0] += 1
        elif line.startswith("-"):
            counts[path][1] += 1
    return "; ".join(f"{p}: +{a} -{r} lines" for p, (a, r) in counts.items())


def experiment_payload(exp: Mapping[str, Any], diff_summary: str | None = None) -> ExperimentPayload:
    """An `Experiment.to_json()` dict (a ledger record, or an event's "experiment") as a payload.
    `diff_summary`: the server's `diff_summary(exp["diff"])`; left out, a plain count of lines."""
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
        diff_summary=diff_summary if diff_summary is not None else _diff_summary(exp.get("diff") or ""),
        baseline=exp.get("kind") == "baseline",
        rerun_of=exp.get("rerun_of") if isinstance(exp.get("rerun_of"), int) else None,
        review=exp.get("review") if exp.get("review") in ("accepted", "rejected") else None,
    )


def experiment_started(
    exp: Mapping[str, Any], diff_summary: str | None = None, root: str | None = None
) -> ExperimentStartedParams:
    return ExperimentStartedParams(experiment=experiment_payload(exp, diff_summary), root=root)


def experiment_finished(
    exp: Mapping[str, Any], new_best: bool = False, diff_summary: str | None = None, root: str | None = None
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
