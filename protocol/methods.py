"""Nightlab's custom LSP methods and commands: their names, and one registry that says for each its
direction, params type, result type and when it is sent.

The registry (`REGISTRY`) is the single source for the TypeScript mirror (`Methods`, `Commands` and
the per-method type maps in nightlab-protocol.ts) and for METHODS.md; both are rendered by
generate_ts.py and a test fails when either drifts from this file.

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol (the server's lsp/ package maps these
names onto pygls handlers; this module only names them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from . import types as t

PROTOCOL_VERSION = 2  # bump on any change a client of the previous version would misread
# The server puts {"nightlabProtocol": PROTOCOL_VERSION} in InitializeResult.capabilities.experimental.
EXPERIMENTAL_CAPABILITY = "nightlabProtocol"

# ---------------------------------------------------------------------------- notifications, server -> client
LOOP_STATE = "nightlab/loopState"
EXPERIMENT_STARTED = "nightlab/experimentStarted"
EXPERIMENT_PROGRESS = "nightlab/experimentProgress"
EXPERIMENT_FINISHED = "nightlab/experimentFinished"

# ---------------------------------------------------------------------------- requests, client -> server
EXPERIMENTS = "nightlab/experiments"
EXPERIMENT_DIFF = "nightlab/experimentDiff"
EXPERIMENT_CURVE = "nightlab/experimentCurve"

# ---------------------------------------------------------------------------- commands (workspace/executeCommand)
LOOP_START = "nightlab.loop.start"
LOOP_PAUSE = "nightlab.loop.pause"
LOOP_RESUME = "nightlab.loop.resume"
LOOP_STOP = "nightlab.loop.stop"
STATUS = "nightlab.loop.status"
LOOP_LINEAGE = "nightlab.loop.lineage"
EXPERIMENT_ACCEPT = "nightlab.experiment.accept"
EXPERIMENT_REJECT = "nightlab.experiment.reject"
EXPERIMENT_RERUN = "nightlab.experiment.rerun"
EXPERIMENT_SHOW_DIFF = "nightlab.experiment.showDiff"
EXPERIMENT_APPLY_BEST = "nightlab.experiment.applyBest"
BASELINE_MEASURE = "nightlab.baseline.measure"

Kind = Literal["notification", "request", "command"]


@dataclass(frozen=True)
class Method:
    """One custom method or command of the protocol."""

    name: str  # the wire name
    kind: Kind
    params: type | None  # a payload class from types.py; None: no params (commands: no argument)
    result: type | None  # None: a notification, or a command answering null
    title: str  # the heading in METHODS.md
    doc: str  # when it is sent and what the receiver does (markdown)
    params_optional: bool = False  # commands: the one argument may be left out

    @property
    def direction(self) -> str:
        return "server → client" if self.kind == "notification" else "client → server"

    @property
    def key(self) -> str:
        """The property name in the TypeScript `Methods`/`Commands` objects: the name after `nightlab`,
        camelCased: "nightlab/loopState" -> loopState, "nightlab.loop.start" -> loopStart."""
        parts = self.name.replace("/", ".").split(".")[1:]
        return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


REGISTRY: tuple[Method, ...] = (
    Method(
        LOOP_STATE,
        "notification",
        t.LoopStatePayload,
        None,
        "Loop state",
        """\
Sent on every change of the loop's state (idle, proposing, running, deciding, paused, stopped, errored),
when an experiment starts or finishes (so `running`, `best` and `costUsd` stay current), and once right
after `initialized`, so that a client that connects to a running loop knows where it stands. Each
notification carries the whole state: a client keeps the last one and needs no other.""",
    ),
    Method(
        EXPERIMENT_STARTED,
        "notification",
        t.ExperimentStartedParams,
        None,
        "Experiment started",
        """\
Sent when the engine has committed an experiment in its slot and recorded it as running, before its
training starts. `experiment.status` is `"running"`; `metric`, `delta` and `finishedAt` are null.
Several experiments run at once when the loop has several slots; `number` tells them apart.""",
    ),
    Method(
        EXPERIMENT_PROGRESS,
        "notification",
        t.ProgressPayload,
        None,
        "Experiment progress",
        """\
Sent for each progress sample of a running experiment (the training script's step events, or its log
lines), at most a few times a second per experiment. `stage` says which run of the experiment it is:
`"smoke"` (a short trial run), `"run"`, or `"repeat-<k>"` (a confirmation run with seed + k).
`fraction` restarts at 0 with each stage. A client may drop samples it cannot keep up with.""",
    ),
    Method(
        EXPERIMENT_FINISHED,
        "notification",
        t.ExperimentFinishedParams,
        None,
        "Experiment finished",
        """\
Sent once per experiment when its verdict is recorded in the ledger: `keep` (the loop's branch moved to
it), `discard`, `crash` (including timeouts and changes that did not apply), or `interrupted` (the loop
stopped during its run; it runs again under a new number on the next start). `reason` is the verdict's
reason in the researcher's words; `newBest` is true when the experiment is now the best.""",
    ),
    Method(
        EXPERIMENTS,
        "request",
        t.ExperimentsParams,
        t.ExperimentsPage,
        "Experiments",
        """\
Asks for the ledger of the loop's tag, one page at a time, in order of experiment number (oldest
first). `offset` defaults to 0, `limit` to 100 (the server may answer fewer); `status` keeps only the
experiments with that status. `total` counts every match, so a client knows how many pages there are.
A client that has the first page stays current with the notifications above.""",
    ),
    Method(
        EXPERIMENT_DIFF,
        "request",
        t.ExperimentDiffParams,
        t.ExperimentDiff,
        "Experiment diff",
        """\
Asks for the change an experiment made: the full text of each changed file at the parent commit and at
the experiment's commit, for a diff editor to show side by side. `parent` is null for a file the
experiment created, `experiment` null for one it deleted. An unknown number answers the error
InvalidParams.""",
    ),
    Method(
        EXPERIMENT_CURVE,
        "request",
        t.ExperimentCurveParams,
        t.ExperimentCurve,
        "Experiment curve",
        """\
Asks for the training loss of one of an experiment's runs over budgeted time, read from what the run
recorded (its events file, else its log): for a chart that draws the running experiment over the best
one's curve. A run that recorded no loss answers no points; an unknown number answers InvalidParams.
Version 2 of the protocol added this request.""",
    ),
    Method(
        LOOP_START,
        "command",
        t.LoopStartOverrides,
        t.LoopCommandResult,
        "Start the loop",
        """\
Starts the loop in the workspace, with nightlab.toml's settings and these overrides on top (the same
as `nightlab run`'s flags). Answers once the loop has started; its progress comes as notifications.
An unknown option or a bad value answers InvalidParams; a loop that already runs on the tag, or a
nightlab.toml that is wrong, RequestFailed; each message says what to do.""",
        params_optional=True,
    ),
    Method(
        LOOP_PAUSE,
        "command",
        t.LoopArgs,
        t.LoopCommandResult,
        "Pause the loop",
        """\
The running experiments finish and are recorded; no new one starts until `nightlab.loop.resume`. The
state becomes `paused` once they have finished. On a loop that is not running it changes nothing and
answers the state.""",
        params_optional=True,
    ),
    Method(
        LOOP_RESUME,
        "command",
        t.LoopArgs,
        t.LoopCommandResult,
        "Resume the loop",
        """\
Lets a paused loop start experiments again. Without a running loop it answers RequestFailed.""",
        params_optional=True,
    ),
    Method(
        LOOP_STOP,
        "command",
        t.LoopArgs,
        t.LoopCommandResult,
        "Stop the loop",
        """\
Ends the running experiments now (each is recorded as interrupted and runs again on the next start),
then stops the loop. Answers once the loop has stopped; on a loop that is not running (idle, or
already stopped) it changes nothing and answers the state.""",
        params_optional=True,
    ),
    Method(
        STATUS,
        "command",
        t.LoopArgs,
        t.LoopStatePayload,
        "Loop status",
        """\
Answers the loop's state, the same payload as the `nightlab/loopState` notification: for a client that
(re)connects, or a status bar item that refreshes itself.""",
        params_optional=True,
    ),
    Method(
        LOOP_LINEAGE,
        "command",
        t.LineageArgs,
        t.LoopStatePayload,
        "Show a lineage",
        """\
A workspace with `[[lineage]]` tables runs one loop process for all its lineages, each a tag of its own.
The server follows one of them per folder (the first by default): this command makes it `lineage`, and
answers its state; from then on the folder's experiments, lenses, hovers, notifications and commands
are that lineage's. `lineages` in the state lists them all, with their bests.""",
    ),
    Method(
        EXPERIMENT_ACCEPT,
        "command",
        t.AcceptArgs,
        t.AcceptResult,
        "Accept an experiment",
        """\
Brings an experiment's change into the user's own files: the server sends `workspace/applyEdit` (one
undo step, against the open buffer when there is one) with the change: all of it, or only the file
`path` and, within each file, the hunks listed in `hunks` (0-based, in the order of the file's diff
against the experiment's parent; the server's code actions carry these indices). Hunks already present
in the file are left alone and listed in `alreadyApplied`; a hunk that no longer fits the file is
merged three-way against the experiment's parent, then (a kept chain member) as it was trained; what
still meets the user's own edits is left out and named in `conflicts`, for the client to open the
diff; when nothing is left to apply the buffer is not touched and no review is recorded. Otherwise
records the person's verdict `accepted`, with when (a new ledger record; `review` and `reviewedAt`
in the payload). The loop's branch does not change.""",
    ),
    Method(
        EXPERIMENT_APPLY_BEST,
        "command",
        t.LoopArgs,
        t.AcceptResult,
        "Apply the best",
        """\
Brings the best experiment's code, as it was trained, into the user's files in one step: the best
commit's version of each editable file it changes, merged three-way (base: the file at the commit the
loop started from; theirs: the best commit's; ours: the open buffer, else the file on disk) and sent as
one `workspace/applyEdit` (one undo step). The user's own edits that do not meet the best's hunks stay;
a hunk the user changed differently is left out and named in `conflicts` (and `message`) with the line
it meets ("train.py: line 30 (hunk 2), your edit at line 30"), for the client to open the best's diff
(`nightlab.experiment.showDiff` with `number`); when every remaining hunk conflicts nothing is applied,
`files` is empty and no review is recorded. `number` is the best's; `files` the files the editor
changed; `alreadyApplied` the hunks (0-based, of each file's change from the loop's start) the files
already hold. Records the verdict `accepted` on the best. Without a kept experiment beyond the baseline
it answers RequestFailed. The server's code action and code lens "Apply best: #N (k kept changes)"
call it with no argument.""",
        params_optional=True,
    ),
    Method(
        EXPERIMENT_REJECT,
        "command",
        t.ExperimentArgs,
        t.ExperimentCommandResult,
        "Reject an experiment",
        """\
Records the person's verdict `rejected` on an experiment (a new ledger record; `review` in the
payload). The experiment's own verdict and the loop's branch do not change.""",
    ),
    Method(
        EXPERIMENT_RERUN,
        "command",
        t.ExperimentArgs,
        t.ExperimentCommandResult,
        "Run an experiment again",
        """\
Queues the same change again, another look at a noisy result; it runs under a new number (its
`rerunOf` names the original) before the agent's next proposal. Needs a running loop.""",
    ),
    Method(
        EXPERIMENT_SHOW_DIFF,
        "command",
        t.ExperimentArgs,
        t.ExperimentDiff,
        "Show an experiment's diff",
        """\
Answers what `nightlab/experimentDiff` answers, as a command, so that the server's code lenses and
hovers can name it. vscode-languageclient would send it to the server and drop the answer: the extension
handles it in the client's `middleware.executeCommand` (calls `next` for the answer, then opens a diff
editor on it).""",
    ),
    Method(
        BASELINE_MEASURE,
        "command",
        t.LoopArgs,
        t.LoopCommandResult,
        "Measure the baseline",
        """\
Queues the current best, unchanged, to run again as a baseline (the policy's number of repeats), for a
fresh anchor of the noise floor, e.g. after the machine's load changed. Needs a running loop; the runs
come as ordinary experiments with `baseline` true.""",
        params_optional=True,
    ),
)

BY_NAME: dict[str, Method] = {m.name: m for m in REGISTRY}
NOTIFICATIONS = tuple(m for m in REGISTRY if m.kind == "notification")
REQUESTS = tuple(m for m in REGISTRY if m.kind == "request")
COMMANDS = tuple(m for m in REGISTRY if m.kind == "command")

PREAMBLE = """\
This document describes the LSP extensions of Nightlab's language server (`nightlab.server.lsp`):
notifications that follow the loop as it runs, requests for the ledger and an experiment's diff, and
commands that drive the loop. The names and payload types are defined once, in `protocol/methods.py`
and `protocol/types.py`; this file and `protocol/nightlab-protocol.ts` (the extension's copy) are
generated from them by `python -m nightlab.protocol.generate_ts`, and a test fails when they drift.

- Keys are camelCase on the wire. A field marked `?` may be absent or null; every other field is
  always present. Readers ignore keys they do not know.
- The server advertises the protocol version in `InitializeResult.capabilities.experimental`:
  `{"nightlabProtocol": <version>}`; the extension compares it with `PROTOCOL_VERSION` in
  nightlab-protocol.ts and tells the user to update whichever side is older.
- With several workspace folders the server runs one loop per folder: notifications carry `root` (the
  folder's path), and requests and commands take an optional `root` (a path or file URI; left out:
  the first folder). A single-folder client can ignore it.
- Commands go through `workspace/executeCommand` with at most one argument (an object). The server
  lists them in `executeCommandProvider`, and vscode-languageclient registers each listed id as a VS Code
  command by itself: the extension must not call `registerCommand` with the same ids (VS Code throws
  "command already exists"); it calls them with `vscode.commands.executeCommand(id, arg)`.
- A command or request that fails answers an LSP error whose message a person can act on (plain
  words, no traceback): InvalidParams (-32602) for a bad argument (a wrong type, an unknown option, a
  root that is no open folder) or an experiment number the ledger does not have; RequestFailed
  (-32803) when the workspace's state does not allow it now (start while the loop runs, resume or
  rerun while it does not, a hunk that no longer fits). Messages of the loop (warnings, rate limits)
  use the standard `window/logMessage`.
"""
