"""The payloads that travel between the language server and its clients, as plain dataclasses.

Python names are snake_case; on the wire every key is camelCase (`memory_gb` -> `memoryGb`). Each payload
has `to_wire()` (a JSON-ready dict) and `from_wire(data)` (checks types, fills defaults, ignores keys it
does not know so that an older reader survives a newer writer); both live in wire.py. `generate_ts.py`
renders the TypeScript mirror from these annotations, so a field is added here and nowhere else. The
converters from the engine's records to these payloads live in convert.py.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol, or anything outside the standard
library (the payloads are the one thing every side shares).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .wire import Wire, WireError, camel

__all__ = [  # WireError and camel re-exported: a handler needs one import for payloads and their errors
    "ALIASES",
    "AcceptArgs",
    "AcceptResult",
    "BestPayload",
    "ClusterNode",
    "ClusterPayload",
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
    "LineageArgs",
    "LineagePayload",
    "LoopArgs",
    "LoopCommandResult",
    "LoopStartOverrides",
    "LoopState",
    "LoopStatePayload",
    "MetricDirection",
    "PAYLOADS",
    "ProgressPayload",
    "Review",
    "InFile",
    "Verdict",
    "Wire",
    "WireError",
    "camel",
]

# ---------------------------------------------------------------------------- named literal types
# Rendered as TypeScript union types under these names (see ALIASES).

LoopState = Literal["idle", "proposing", "running", "deciding", "paused", "stopped", "errored"]  # events.STATES
ExperimentStatus = Literal["running", "keep", "discard", "crash", "interrupted"]
Verdict = Literal["keep", "discard", "crash", "interrupted"]  # a finished experiment's status
MetricDirection = Literal["lower", "higher"]
Review = Literal["accepted", "rejected"]  # the person's verdict on an experiment
InFile = Literal["all", "some", "none"]  # how much of an experiment's change the file (or open buffer) holds

ALIASES: dict[str, Any] = {
    "LoopState": LoopState,
    "ExperimentStatus": ExperimentStatus,
    "Verdict": Verdict,
    "MetricDirection": MetricDirection,
    "Review": Review,
    "InFile": InFile,
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
    reviewed_at: str | None = None  # when they gave it (ISO 8601)
    # Computed from the files and the open buffers when asked (nightlab/experiments), never stored: how
    # much of this experiment's change is in the user's file now. null: not computed (no commit, a baseline)
    in_file: InFile | None = None
    # The conditions it was measured under: a new lineage (a new baseline) starts when they change
    lineage: int | None = None  # the tag's lineage (null: 1, before lineages); verdicts compare only its own
    budget_mode: str | None = None  # "time" | "tokens"; null: a record from before budgets were recorded
    budget_amount: float | None = None  # seconds or tokens
    device: str | None = None  # "cpu", "cuda:<name>", or the slot's kind ("gpu")
    self_reported: bool | None = None  # true: the run's own printed number, no judge measured it; null: unknown
    # Many machines: where it ran, and ideas that travel between lineages (a lineage is a tag of its own)
    node: str | None = None  # the cluster node that trained it (Ray), null: this machine
    port_of: str | None = None  # the keep in another lineage this experiment re-applies ("gpu #12")
    replicated_in: list[str] = field(default_factory=list)  # lineages whose port of this keep was kept too


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
class ClusterNode(Wire):  # a live node of the Ray cluster
    id: str  # Ray's node id
    address: str = ""  # its IP address
    resources: dict[str, float] = field(default_factory=dict)  # what it has: CPU, GPU, custom (a hardware class)


@dataclass
class ClusterPayload(Wire):
    """The Ray cluster a loop runs on (`[run] executor = "ray"`), as its loop process last saw it."""

    address: str = ""  # what the loop joined ("auto", or the head's host:port); nodes: the live ones
    nodes: list[ClusterNode] = field(default_factory=list)
    total: dict[str, float] = field(default_factory=dict)  # the nodes' resources together
    in_use: dict[str, float] = field(default_factory=dict)  # what the runs hold now (a run's resources: a slot)
    error: str = ""  # the cluster did not answer: why


@dataclass
class LineagePayload(Wire):
    """One [[lineage]] of the workspace: a tag with its own baseline, noise and frontier (loop/swarm.py)."""

    name: str  # its tag
    resources: str = ""  # what a run asks the cluster for ("num_gpus=1"); "" for the defaults
    focus: str = ""  # the agent's focus for it
    experiments: int = 0
    best: BestPayload | None = None
    baseline: float | None = None  # its baseline's metric
    running: bool = False  # its loop process answers
    ports: int = 0  # other lineages' keeps re-applied here and judged
    ports_kept: int = 0  # of those, the ones it kept (each replicates an idea)
    replicated: int = 0  # its own keeps that another lineage kept a port of


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
    # The settings in effect: the running loop's own (from its process), else what Start would use
    policy: str = ""  # "noise" | "strict"
    model: str | None = None  # the Claude model, when the agent is anthropic
    sandbox: str = ""  # "auto" | "required" | "off"
    baseline_repeats: int | None = None
    max_experiments: int | None = None  # 0: no limit
    # The loop process (one per tag; `nightlab run`, detached or in a terminal) the server is attached to
    pid: int | None = None  # null: no loop process runs for this folder
    log: str | None = None  # its log file, when detached
    died: bool = False  # the loop ended without stopping (kill -9, a crash); `reason` says so, with its log's tail
    # Many machines: the workspace's [[lineage]] tables (`tag` is the one shown), and the Ray cluster
    lineages: list[LineagePayload] = field(default_factory=list)
    cluster: ClusterPayload | None = None  # null: not on Ray, or no loop process attached


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
    continue_lineage: bool | None = None  # the user's HEAD moved on since the tag started: go on with its old lineage
    branch_prefix: str | None = None  # the loop's branch is <prefix>/<tag> ("autoresearch": autoresearch's naming)
    executor: str | None = None  # where runs train: "local" (this machine) or "ray" (a Ray cluster)
    ray_address: str | None = None  # the Ray cluster to join ("auto", "host:port"), with executor "ray"
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one

    def to_settings_overrides(self) -> dict[str, Any]:
        """The flat dict `nightlab.server.core.settings.load_settings` takes (the CLI's flags); root is not one."""
        return {f.name: v for f in fields(self) if f.name != "root" and (v := getattr(self, f.name)) is not None}


@dataclass
class LoopArgs(Wire):
    root: str | None = None  # the workspace folder (a path or file URI); left out: the first one


@dataclass
class LineageArgs(Wire):
    lineage: str  # one of the workspace's [[lineage]] names
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
    conflicts: list[str] = field(default_factory=list)  # left out, meeting the user's edits ("train.py: lines 40-44")
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
    ClusterNode,
    ClusterPayload,
    LineagePayload,
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
    LineageArgs,
    ExperimentArgs,
    AcceptArgs,
    LoopCommandResult,
    AcceptResult,
    ExperimentCommandResult,
)
