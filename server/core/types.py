"""The records every layer speaks: enums for states, proposals, run results, progress, experiments.

Statuses, states and kinds are `str` enums: they compare equal to their values and serialise as them,
so the ledger's JSON is plain strings and a ledger written before the enums is read unchanged.
Must not import: anything but the standard library (tests/test_layers.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any


class _Str(str, Enum):
    def __str__(self) -> str:  # f"{status}" is "keep", on every Python
        return str(self.value)


class ExperimentStatus(_Str):
    """An experiment's state in the ledger. RUNNING is the only unfinished one: a loop that dies
    leaves it, and the next start turns it into INTERRUPTED (and runs the change again)."""

    RUNNING = "running"
    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    INTERRUPTED = "interrupted"

    def is_finished(self) -> bool:
        return self is not ExperimentStatus.RUNNING

    def has_row(self) -> bool:
        """Whether results.tsv has a row for it (autoresearch's keep | discard | crash)."""
        return self in (ExperimentStatus.KEEP, ExperimentStatus.DISCARD, ExperimentStatus.CRASH)


class RunStatus(_Str):
    """How one training process ended."""

    OK = "ok"
    CRASH = "crash"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"


class Verdict(_Str):
    """What a policy says of a candidate's runs: CONFIRM asks for another run first."""

    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    CONFIRM = "confirm"


class LoopState(_Str):
    IDLE = "idle"
    PROPOSING = "proposing"
    RUNNING = "running"
    DECIDING = "deciding"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERRORED = "errored"


class ExperimentKind(_Str):
    """CHANGE: an agent's (or a re-run's) change; BASELINE: the unchanged best, measured for reference."""

    CHANGE = "change"
    BASELINE = "baseline"


class Review(_Str):
    """The person's verdict on an experiment, recorded when they accept or reject it."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


@dataclass
class FileEdit:
    """One SEARCH/REPLACE block on one file (path relative to the workspace root)."""

    path: str
    search: str
    replace: str


@dataclass
class Proposal:
    """What an agent returns: a change to try and why. Agents never write to disk."""

    description: str
    edits: list[FileEdit]
    hypothesis: str = ""
    agent: str = ""
    usage: dict[str, Any] = field(default_factory=dict)  # tokens, cost_usd, latency_s ...
    meta: dict[str, Any] = field(default_factory=dict)  # agent-private, e.g. the offline agent's knob
    # Set by the engine, never by an agent:
    kind: ExperimentKind = ExperimentKind.CHANGE
    rerun_of: int | None = None  # the experiment whose change this runs again
    files: dict[str, str] | None = None  # the editable files as a whole (a re-run), instead of edits
    base: str = ""  # the commit the edits were written against
    rebased: bool = False  # a draft re-applied on a newer best
    invalid: str = ""  # why the agent could not make a valid proposal: recorded as a crash, no run spent
    port_of: str = ""  # another lineage's keep this re-applies ("gpu #12"): loop/ports.py


@dataclass
class HistoryItem:
    """One past experiment as an agent sees it."""

    number: int
    description: str
    status: str  # keep | discard | crash | baseline
    metric: float | None
    delta: float | None
    diff_summary: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # the verdict's reason: why it was kept or discarded, or how it crashed


@dataclass
class ExperimentContext:
    """Everything an agent may read to propose the next experiment."""

    program: str
    files: dict[str, str]  # editable file path -> text at the branch head
    editable: list[str]
    history: list[HistoryItem]
    metric_name: str = "val_bpb"
    direction: str = "lower"
    best: float | None = None
    noise_sigma: float | None = None
    seed: int = 0
    in_flight: list[str] = field(default_factory=list)  # descriptions of proposals running now
    focus: str = ""  # the lineage's focus ([[lineage]] focus): what its agent should concentrate on
    elsewhere: list[str] = field(default_factory=list)  # what the other lineages kept ("gpu #12: ...")
    feedback: str = ""  # set by the engine when the previous proposal's edits did not apply: why


@dataclass
class Progress:
    """A progress sample from a running experiment (from the events file or the log)."""

    step: int
    elapsed_s: float
    loss: float | None = None
    tok_per_s: float | None = None
    mfu: float | None = None
    lr: float | None = None
    fraction: float | None = None  # 0..1 of the budget, when known


@dataclass
class RunResult:
    """How one training run ended. A failed run is a result, not an exception."""

    status: RunStatus
    metrics: dict[str, float] = field(default_factory=dict)  # the summary block, parsed
    error: str = ""  # why it crashed, last lines of the log, or the compile error
    returncode: int | None = None
    startup_s: float = 0.0
    training_s: float = 0.0
    eval_s: float = 0.0
    total_s: float = 0.0
    peak_memory_mb: float = 0.0
    log_path: str = ""
    # True: the metric is the run's own printed word; False: a judge process measured it (run/judge.py)
    self_reported: bool = True

    def metric(self, name: str) -> float | None:
        return self.metrics.get(name)


@dataclass
class Experiment:
    """One record of the ledger (experiments.jsonl). Append-only; the last record per number wins.

    `meta` is what an agent attached to its proposal (its own bookkeeping, the model); everything the
    engine means by an experiment is a typed field. `from_json` reads records written before those
    fields existed (they lived in `meta` then)."""

    number: int
    tag: str
    description: str
    hypothesis: str = ""
    parent_commit: str = ""
    commit: str = ""
    diff: str = ""
    status: ExperimentStatus = ExperimentStatus.RUNNING
    run_status: str = ""  # a RunStatus, "" while running
    metric: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    best_before: float | None = None
    delta: float | None = None
    seeds: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    memory_gb: float = 0.0
    agent: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    decision_reason: str = ""
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    kind: ExperimentKind = ExperimentKind.CHANGE
    rerun_of: int | None = None
    runs: list[float] = field(default_factory=list)  # the metric of each full run, when repeated
    slot: str = ""  # where it ran (cpu0, gpu1, ...)
    edits: list[dict[str, str]] = field(default_factory=list)  # the proposal's SEARCH/REPLACE blocks
    decision: dict[str, Any] = field(default_factory=dict)  # the policy's verdict, z, sigma, repeats
    smoke: dict[str, Any] = field(default_factory=dict)  # the smoke run's status and time
    base: str = ""  # the commit the proposal was written against
    rebased: bool = False
    review: Review | None = None
    review_note: str = ""
    reviewed_at: str = ""  # when the person gave the review (ISO 8601)
    # Which lineage of the tag it belongs to: a new one starts from the user's HEAD when their code
    # moved on (loop/lineage.py); a record written before lineages has none and is of the first.
    lineage: int = 1
    # The conditions it was measured under (loop/conditions.py): verdicts compare only experiments of
    # one lineage, and a change of conditions starts a new one. "" / None: a record from before them.
    budget_mode: str = ""  # time | tokens
    budget_amount: float | None = None  # seconds or tokens
    device: str = ""  # cpu, cuda:<name>, or the slot's kind (gpu)
    protected_hash: str = ""  # the [files] protected at its commit
    # Whose number the metric is: False, the judge's (Nightlab's trainer); True, the run's own printed
    # summary (an autoresearch checkout, any workspace without judge.py); None: a record from before.
    self_reported: bool | None = None
    # Many machines (loop/swarm.py): the Ray node that trained it ("" here), and the keep of another
    # lineage it re-applies ("gpu #12", "" for the lineage's own ideas).
    node: str = ""
    port_of: str = ""

    def __post_init__(self) -> None:  # plain strings (a test, an old caller) become the enums
        self.status = ExperimentStatus(self.status)
        self.kind = ExperimentKind(self.kind)
        self.review = Review(self.review) if self.review else None

    @property
    def is_baseline(self) -> bool:
        return self.kind == ExperimentKind.BASELINE

    @property
    def run_values(self) -> list[float]:
        """The metric of every full run (one, unless it was repeated)."""
        if self.runs:
            return [float(v) for v in self.runs]
        return [self.metric] if self.metric is not None else []

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Experiment:
        known = set(cls.__dataclass_fields__)
        fields = {k: v for k, v in data.items() if k in known}
        meta = dict(fields.get("meta") or {})
        for key in _TYPED_META:  # a record from before the typed fields: its meta held them
            if key in meta and key not in data:
                fields[key] = meta.pop(key)
        if meta.pop("baseline", False) and "kind" not in data:
            fields["kind"] = ExperimentKind.BASELINE
        fields["meta"] = meta
        fields["kind"] = fields.get("kind") or ExperimentKind.CHANGE
        if fields.get("review") not in ("accepted", "rejected"):
            fields["review"] = None
        return cls(**fields)


_TYPED_META = ("rerun_of", "runs", "slot", "edits", "decision", "smoke", "base", "rebased", "review", "review_note")


def utc_now() -> str:
    """A ledger timestamp: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
