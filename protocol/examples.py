"""One example params/result per custom method, as payload objects: METHODS.md shows them as JSON (through
`to_wire()`, so an example can never show a key the types do not have), and the tests round-trip them.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from . import methods as m
from . import types as t

KEPT = t.ExperimentPayload(
    number=7,
    tag="mar5",
    status="keep",
    description="raise the learning rate to 0.004",
    hypothesis="the loss still falls steeply at the end: the model is under-trained at 0.003",
    metric=0.981234,
    delta=-0.006521,
    sigma=0.0011,
    z=4.19,
    repeats=2,
    memory_gb=1.2,
    duration_s=131.4,
    agent="anthropic",
    cost_usd=0.0123,
    commit="9c1f2e4",
    parent_commit="41d07aa",
    started_at="2025-03-05T23:14:02Z",
    finished_at="2025-03-05T23:16:13Z",
    reason="kept: -0.006521 is 4.2 standard errors better than the best (sigma 0.0011, 2 runs)",
    slot="gpu0",
    diff_summary="train.py: LR 0.003 -> 0.004",
)
RUNNING = t.ExperimentPayload(
    number=8,
    tag="mar5",
    status="running",
    description="depth 8 -> 10",
    agent="anthropic",
    commit="e03b5d1",
    parent_commit="9c1f2e4",
    started_at="2025-03-05T23:16:15Z",
    slot="gpu0",
    diff_summary="train.py: DEPTH 8 -> 10",
)
STATE = t.LoopStatePayload(
    state="running",
    reason="depth 8 -> 10",
    tag="mar5",
    agent="anthropic",
    budget="300 s",
    best=t.BestPayload(number=7, metric=0.981234),
    baseline=0.997755,
    experiments_run=8,
    running=[8],
    cost_usd=0.0912,
    root="/home/ada/lab",
)

SWARM_STATE = replace(
    STATE,
    tag="cpu",
    best=t.BestPayload(number=9, metric=1.412207),
    baseline=1.436001,
    experiments_run=12,
    running=[13],
    lineages=[
        t.LineagePayload(
            name="gpu",
            resources="num_gpus=1",
            experiments=31,
            best=t.BestPayload(number=12, metric=0.978112),
            baseline=0.997755,
            running=True,
            ports=2,
            ports_kept=1,
            replicated=1,
        ),
        t.LineagePayload(
            name="cpu",
            resources="num_cpus=4, laptop=1",
            focus="initialisation and normalisation",
            experiments=12,
            best=t.BestPayload(number=9, metric=1.412207),
            baseline=1.436001,
            running=True,
            ports=1,
            ports_kept=1,
        ),
    ],
    cluster=t.ClusterPayload(
        address="10.0.0.1:6379",
        nodes=[
            t.ClusterNode(id="a1f3c9d2e4b5", address="10.0.0.1", resources={"CPU": 32.0, "GPU": 8.0}),
            t.ClusterNode(id="77c0e1aa9b3f", address="10.0.0.7", resources={"CPU": 8.0, "laptop": 1.0}),
        ],
        total={"CPU": 40.0, "GPU": 8.0, "laptop": 1.0},
        in_use={"CPU": 4.0, "GPU": 1.0, "laptop": 1.0},
    ),
)

DIFF = t.ExperimentDiff(
    number=7,
    parent="41d07aa",
    commit="9c1f2e4",
    files=[
        t.FileDiff(
            path="train.py",
            parent="LR = 0.003  # peak learning rate\n",
            experiment="LR = 0.004  # peak learning rate\n",
            hunks=[
                t.HunkInfo(
                    index=0,
                    parent_start=0,
                    parent_end=1,
                    experiment_start=0,
                    experiment_lines=1,
                    summary="LR = 0.003 -> 0.004",
                )
            ],
        )
    ],
)

# wire name -> (params, result); None where the method has none (or, for a command, where its argument is optional).
EXAMPLES: dict[str, tuple[Any | None, Any | None]] = {
    m.LOOP_STATE: (STATE, None),
    m.EXPERIMENT_STARTED: (t.ExperimentStartedParams(experiment=RUNNING), None),
    m.EXPERIMENT_PROGRESS: (
        t.ProgressPayload(
            number=8,
            step=412,
            elapsed_s=96.3,
            loss=3.214,
            tok_per_s=184000.0,
            mfu=38.5,
            lr=0.85,
            fraction=0.321,
            stage="run",
        ),
        None,
    ),
    m.EXPERIMENT_FINISHED: (
        t.ExperimentFinishedParams(experiment=KEPT, verdict="keep", reason=KEPT.reason, new_best=True),
        None,
    ),
    m.EXPERIMENTS: (
        t.ExperimentsParams(offset=0, limit=2, status="keep"),
        t.ExperimentsPage(
            total=3,
            offset=0,
            experiments=[
                t.ExperimentPayload(
                    number=1,
                    tag="mar5",
                    status="keep",
                    description="baseline",
                    metric=0.997755,
                    repeats=3,
                    commit="41d07aa",
                    reason="baseline: 0.997755",
                    baseline=True,
                ),
                KEPT,
            ],
        ),
    ),
    m.EXPERIMENT_DIFF: (t.ExperimentDiffParams(number=7), DIFF),
    m.EXPERIMENT_CURVE: (
        t.ExperimentCurveParams(number=7),
        t.ExperimentCurve(
            number=7,
            stage="run",
            points=[
                t.CurvePoint(step=10, elapsed_s=2.4, loss=6.912),
                t.CurvePoint(step=20, elapsed_s=4.8, loss=5.137),
                t.CurvePoint(step=30, elapsed_s=7.2, loss=4.381),
            ],
        ),
    ),
    m.LOOP_START: (
        t.LoopStartOverrides(agent="offline", budget_seconds=8, max_experiments=3, tag="x"),
        t.LoopCommandResult(state="idle", message="starting the loop on nightlab/x", tag="x"),
    ),
    m.LOOP_PAUSE: (
        t.LoopArgs(root="/home/ada/lab"),
        t.LoopCommandResult(state="running", message="pausing after experiment 8", tag="mar5"),
    ),
    m.LOOP_RESUME: (None, t.LoopCommandResult(state="proposing", tag="mar5")),
    m.LOOP_STOP: (None, t.LoopCommandResult(state="stopped", message="experiment 8 interrupted", tag="mar5")),
    m.STATUS: (None, STATE),
    m.LOOP_LINEAGE: (t.LineageArgs(lineage="cpu"), SWARM_STATE),
    m.EXPERIMENT_ACCEPT: (
        t.AcceptArgs(number=7, path="train.py", hunks=[0]),
        t.AcceptResult(number=7, files=["train.py"]),
    ),
    m.EXPERIMENT_REJECT: (t.ExperimentArgs(number=7), t.ExperimentCommandResult(number=7, message="rejected")),
    m.EXPERIMENT_RERUN: (
        t.ExperimentArgs(number=7),
        t.ExperimentCommandResult(number=7, message="queued to run again"),
    ),
    m.EXPERIMENT_SHOW_DIFF: (t.ExperimentArgs(number=7), DIFF),
    m.EXPERIMENT_APPLY_BEST: (
        None,
        t.AcceptResult(
            number=7,
            files=["train.py"],
            message="Apply best: #7 (3 kept changes): #4, #5, #7; left out (open the diff of #7): "
            "hunk 2 of train.py (MATRIX_LR = 0.02 -> 0.04) meets your edit at line 31",
        ),
    ),
    m.BASELINE_MEASURE: (None, t.LoopCommandResult(state="running", message="baseline queued: 3 runs", tag="mar5")),
}
