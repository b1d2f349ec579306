"""Plain data passed between the engine's parts: proposals, run results, progress, experiments.

Every part (runner, store, ledger, agents, policy, engine) speaks these types and nothing else.
Must not import: git, torch, pygls, anthropic, or any other nightlab.server module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

RunStatus = Literal["ok", "crash", "timeout", "interrupted"]
Verdict = Literal["keep", "discard", "crash"]


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


@dataclass
class HistoryItem:
    """One past experiment as an agent sees it."""

    number: int
    description: str
    status: str  # keep | discard | crash | baseline
    metric: Optional[float]
    delta: Optional[float]
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
    best: Optional[float] = None
    noise_sigma: Optional[float] = None
    seed: int = 0
    in_flight: list[str] = field(default_factory=list)  # descriptions of proposals running now
    feedback: str = ""  # set by the engine when the previous proposal's edits did not apply: why


@dataclass
class Progress:
    """A progress sample from a running experiment (from the events file or the log)."""

    step: int
    elapsed_s: float
    loss: Optional[float] = None
    tok_per_s: Optional[float] = None
    mfu: Optional[float] = None
    lr: Optional[float] = None
    fraction: Optional[float] = None  # 0..1 of the budget, when known


@dataclass
class RunResult:
    """How one training run ended. A failed run is a result, not an exception."""

    status: RunStatus
    metrics: dict[str, float] = field(default_factory=dict)  # the summary block, parsed
    error: str = ""  # why it crashed, last lines of the log, or the compile error
    returncode: Optional[int] = None
    startup_s: float = 0.0
    training_s: float = 0.0
    eval_s: float = 0.0
    total_s: float = 0.0
    peak_memory_mb: float = 0.0
    log_path: str = ""

    def metric(self, name: str) -> Optional[float]:
        return self.metrics.get(name)


@dataclass
class Experiment:
    """One record of the ledger (experiments.jsonl). Append-only; the last record per number wins."""

    number: int
    tag: str
    description: str
    hypothesis: str = ""
    parent_commit: str = ""
    commit: str = ""
    diff: str = ""
    status: str = "running"  # running | keep | discard | crash | interrupted
    run_status: str = ""  # ok | crash | timeout | interrupted
    metric: Optional[float] = None
    metrics: dict[str, float] = field(default_factory=dict)
    best_before: Optional[float] = None
    delta: Optional[float] = None
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Experiment":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
