"""The loop's control endpoint: the messages between a loop process (`nightlab run`) and its clients (the
CLI's attach, status, stop ...; the language server), over the Unix socket `.nightlab/<tag>/loop.sock`.

Framing: one JSON object per line (UTF-8, `\\n`-terminated, at most MAX_LINE bytes), each with a "type"
key naming its message class (MESSAGES) and the class's fields in camelCase (wire.py). On connect the
server sends a `hello` (who it is, where the loop stands, the settings in effect, the experiments in
flight and the last events), then an `event` for each engine event as it happens. A client sends
`command`s; each is answered by a `reply` or an `error` with the command's `id` echoed. The server ends
a connection with a `goodbye` saying why (the loop ended, the client read too slowly); a connection that
ends without one means the loop process died.

`encode(message)` gives the line (bytes); `decode(line)` gives the message or raises ControlError (not
JSON, not an object, an unknown type, a field of the wrong type, a line too long).

Must not import: nightlab.server, nightlab.trainer, pygls, lsprotocol, or anything outside the standard
library (the messages are shared with every client, like types.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from .types import ClusterPayload, LoopState
from .wire import Wire, WireError

CONTROL_VERSION = 1  # bump on any change a client of the previous version would misread
MAX_LINE = 1 << 20  # bytes per line, either way; a longer one is refused (and the connection closed)
RECENT_EVENTS = 200  # events the hello carries
CLIENT_QUEUE = 1000  # lines a client may fall behind before the loop drops it

ControlCommandName = Literal["pause", "resume", "stop", "rerun", "baseline", "status", "cancel"]
ControlErrorCode = Literal["malformed", "tooLarge", "unknownType", "invalid", "conflict", "failed"]
GoodbyeCode = Literal["loopEnded", "tooSlow", "tooLarge"]

ALIASES: dict[str, Any] = {
    "ControlCommandName": ControlCommandName,
    "ControlErrorCode": ControlErrorCode,
    "GoodbyeCode": GoodbyeCode,
}


class ControlError(ValueError):
    """A line that is not a control message; `code` is the error reply's code."""

    def __init__(self, message: str, code: str = "malformed", id: Any = None):
        super().__init__(message)
        self.code, self.id = code, id


# ---------------------------------------------------------------------------- the messages


@dataclass
class ControlSettings(Wire):
    """The settings the loop runs with (nightlab.toml with the run's flags over it)."""

    budget_mode: str  # "time" | "tokens"
    budget_amount: float  # seconds or tokens per experiment
    budget: str  # "60 s" or "1,000,000 tokens"
    policy: str  # "noise" | "strict"
    agent: str
    model: str | None = None  # the Claude model, when the agent is anthropic
    sandbox: str = "auto"  # auto | required | off
    metric_name: str = "val_bpb"
    direction: str = "lower"  # "lower" | "higher" is better
    baseline_repeats: int = 1  # the policy's runs of a baseline
    max_experiments: int = 0  # 0: no limit


@dataclass
class RunningExperiment(Wire):
    """An experiment in flight: its record as the engine's events carry it, and its latest progress."""

    number: int
    experiment: dict[str, Any]  # the ledger record (Experiment.to_json(), snake_case keys, as in events)
    progress: dict[str, Any] | None = None  # the last progress event's `progress`, none yet: null
    stage: str | None = None  # that event's stage: "run", "smoke", "repeat-<k>"


@dataclass
class LoopSnapshot(Wire):
    """Where one loop process stands."""

    pid: int
    tag: str
    workspace: str  # the workspace folder (a path)
    state: LoopState
    reason: str = ""
    settings: ControlSettings | None = None
    running: list[RunningExperiment] = field(default_factory=list)
    log: str | None = None  # the loop's log file when detached (.nightlab/<tag>/loop.log)
    cluster: ClusterPayload | None = None  # with the Ray executor: the cluster as the loop last saw it


@dataclass
class ControlHello(Wire):
    """The first line the server sends: the loop as it stands, then the last events, oldest first."""

    protocol: int  # CONTROL_VERSION
    loop: LoopSnapshot
    events: list[dict[str, Any]] = field(default_factory=list)  # engine events (protocol/events.py)


@dataclass
class ControlEvent(Wire):
    """One engine event as it happens: a dict with "type" and the fields protocol/events.py lists."""

    event: dict[str, Any]


@dataclass
class ControlCommand(Wire):
    """Client -> loop: what to do. Each is answered by a reply or an error with the same id."""

    id: Any  # a number or a string, echoed
    command: ControlCommandName
    number: int | None = None  # rerun: the experiment to run again; cancel: the running one to stop


@dataclass
class ControlReply(Wire):
    id: Any
    command: ControlCommandName
    state: LoopState  # the loop's state right after the command
    message: str = ""  # what follows ("pausing after the running experiment")
    loop: LoopSnapshot | None = None  # status: where the loop stands


@dataclass
class ControlErrorReply(Wire):
    id: Any  # the command's, when it could be read; else null
    code: ControlErrorCode
    message: str


@dataclass
class ControlGoodbye(Wire):
    """The server's last line before it closes the connection."""

    code: GoodbyeCode
    message: str
    state: LoopState | None = None  # the loop's final state when it ended


# the "type" of each message on the wire, in the order METHODS.md and the TypeScript mirror list them
MESSAGES: dict[str, type[Wire]] = {
    "hello": ControlHello,
    "event": ControlEvent,
    "command": ControlCommand,
    "reply": ControlReply,
    "error": ControlErrorReply,
    "goodbye": ControlGoodbye,
}
TYPE_OF: dict[type, str] = {cls: name for name, cls in MESSAGES.items()}
SENT_BY = {"hello": "loop", "event": "loop", "command": "client", "reply": "loop", "error": "loop", "goodbye": "loop"}
PAYLOADS: tuple[type, ...] = (ControlSettings, RunningExperiment, LoopSnapshot, *MESSAGES.values())


# ---------------------------------------------------------------------------- the framing


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as null (JSON has neither), in nested dicts and lists too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def encode(message: Wire) -> bytes:
    """The message as one line: {"type": ..., fields...}\\n."""
    body = {"type": TYPE_OF[type(message)], **finite(message.to_wire())}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode(line: bytes | str) -> Wire:
    """The message a line holds; ControlError when it holds none (with the id, when one could be read)."""
    size = len(line.encode() if isinstance(line, str) else line)
    if size > MAX_LINE:
        raise ControlError(f"a line of {size:,} bytes: at most {MAX_LINE:,} per message", "tooLarge")
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ControlError(f"a message is a JSON object, not {type(data).__name__}")
    kind = data.get("type")
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(MESSAGES)
        raise ControlError(f"unknown message type {kind!r} (one of: {known})", "unknownType", data.get("id"))
    try:
        return cls.from_wire(data)
    except WireError as exc:
        raise ControlError(str(exc), "invalid", data.get("id")) from None


# ---------------------------------------------------------------------------- METHODS.md

DOC = f"""\
`nightlab run` (in a terminal or with `--detach`) is the one process that runs a tag's loop. It serves a
Unix domain socket at `.nightlab/<tag>/loop.sock` (mode 0600; peers of another uid are closed at once).
Where that path is longer than a socket's 107 bytes, the socket lies under `$XDG_RUNTIME_DIR/nightlab/`
or `/tmp/nightlab-<uid>/` (a folder of mode 0700) instead. Either way `.nightlab/<tag>/loop.json` says
where: `{{"pid": 41277, "socket": "...", "log": ".nightlab/<tag>/loop.log" | null}}`, written once the loop
listens and removed when it ends cleanly. A loop.json whose pid no longer holds the tag's lock
(`.nightlab/<tag>/loop.lock`, an flock the kernel drops with the process) means that the loop died
(`kill -9`): its socket refuses connections and is removed by the first client that finds it so.

Framing: one JSON object per line (UTF-8, ending in `\\n`), at most {MAX_LINE:,} bytes; each has a `type`
naming the message and the message's fields in camelCase. On connect the loop sends `hello`, then an
`event` for each engine event as it happens (the dicts of protocol/events.py: `state`, `experimentStarted`,
`progress`, `experimentFinished`, `message`; experiment records with the ledger's snake_case keys). A client
sends `command`s, each answered by a `reply` or an `error` with its `id`. Any number of clients may be
attached; each has a queue of 1,000 lines, and a client that lets it fill is sent a `goodbye` (`tooSlow`)
and closed: the loop never waits for a client. A line that is not a command is answered with an `error`;
a line over the limit ends the connection (`goodbye`, `tooLarge`). When the loop ends, every client gets a
`goodbye` (`loopEnded`) with the final state; a connection that ends without one means the process died.

Commands: `pause` (finish the running experiment, then wait), `resume`, `stop` (end the running
experiments now: each is recorded as interrupted and runs again on the next start; the process exits once
the loop has ended), `rerun` (`number`: that experiment's files again, under a new number, before the
agent's next proposal), `baseline` (measure the current best again), `status` (the reply's `loop`).
"""


_SETTINGS = ControlSettings("time", 60.0, "60 s", "noise", "anthropic", "claude-sonnet-4-5", "auto")
_RUNNING = RunningExperiment(
    7,
    {"number": 7, "tag": "main", "status": "running", "description": "MATRIX_LR 0.04 -> 0.06", "kind": "change"},
    {"step": 120, "elapsed_s": 31.5, "loss": 3.41, "tok_per_s": 51200.0, "fraction": 0.52},
    "run",
)
_LOOP = LoopSnapshot(41277, "main", "/home/me/nanochat-lab", "running", "MATRIX_LR 0.04 -> 0.06", _SETTINGS, [_RUNNING])
EXAMPLES: dict[str, Wire] = {
    "hello": ControlHello(CONTROL_VERSION, _LOOP, [{"type": "state", "state": "running", "reason": _LOOP.reason}]),
    "event": ControlEvent({"type": "progress", "number": 7, "progress": _RUNNING.progress, "stage": "run"}),
    "command": ControlCommand(3, "pause"),
    "reply": ControlReply(3, "pause", "running", "pausing after the running experiment"),
    "error": ControlErrorReply(4, "invalid", "there is no experiment #99 on tag main"),
    "goodbye": ControlGoodbye("loopEnded", "the loop stopped: stop requested", "stopped"),
}
