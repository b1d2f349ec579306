"""Which lines of experiments.jsonl count: the ledger's lines, read with their byte offsets, and the rules
that decide which records are the loop's (ledger.py reads the file and acts; this module only judges).

A line counts when it is a complete JSON record and either legacy (before the ledger's key existed:
seal.py's `since`) or sealed with the key, with a sequence number above every earlier seal (a copy of an
earlier sealed line is refused), outside the byte ranges a later sealed `void` record names (what the
live check found written behind the loop's back), a number at most one past the highest so far, and,
for an experiment already final, the same verdict (a later record may only add the person's review).
Every other line is rejected with a reason a person can read; it is never the best and never moves the
numbering.

Must not import: git, torch, the store, runner, agents or engine.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from nightlab.server.core.types import Experiment, ExperimentStatus
from nightlab.server.record import seal
from nightlab.server.record.seal import Key

FINAL = (ExperimentStatus.KEEP, ExperimentStatus.DISCARD, ExperimentStatus.CRASH)
VOID = "void"  # a sealed record {"void": [[start, end], ...], "reason": ...}: those bytes are not the loop's
NOT_OURS = "a record the loop did not write"


@dataclass
class Line:
    offset: int  # of its first byte
    end: int  # past its newline
    lineno: int  # 1-based, as an editor shows it
    rec: dict[str, Any] | None  # None: torn or not JSON
    exp: Experiment | None = None
    seq: int | None = None  # its seal's sequence number when the seal is the key's


@dataclass
class Rejected:
    line: Line
    why: str


def parse(data: bytes, offset: int, lineno: int) -> list[Line]:
    """The complete lines of `data` (which starts at byte `offset` of the file, line `lineno`)."""
    out = []
    for raw in data.split(b"\n")[:-1]:
        end = offset + len(raw) + 1
        if raw.strip():
            out.append(read_line(raw, offset, end, lineno))
        offset, lineno = end, lineno + 1
    return out


def read_line(raw: bytes, offset: int, end: int, lineno: int) -> Line:
    line = Line(offset, end, lineno, None)
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return line  # the usual cause is a kill -9 mid-append: the tail never reached the disk
    if isinstance(rec, dict):
        line.rec = rec
        if isinstance(rec.get("number"), int):
            try:
                line.exp = Experiment.from_json(rec)
            except (TypeError, ValueError):
                pass
    return line


def describe(line: Line) -> str:
    """'experiment 2, 'keep 0.001'': what a rejected line claimed, in a person's words."""
    exp = line.exp
    if exp is None:
        return "not an experiment record" if line.rec is not None else "a torn or unreadable line"
    metric = f" {exp.metric:g}" if isinstance(exp.metric, float) and math.isfinite(exp.metric) else ""
    return f"experiment {exp.number}, '{exp.status}{metric}'"


def same_verdict(a: Experiment, b: Experiment) -> bool:
    return (a.status, a.metric, a.commit) == (b.status, b.metric, b.commit) or (
        a.status == b.status and a.commit == b.commit and a.metric != a.metric and b.metric != b.metric  # NaN
    )


def _voided(lines: list[Line], since: int) -> list[tuple[int, int]]:
    """The byte ranges voided by sealed void records. Latest first: a void record inside a range a later
    one voided (one forged with a leaked key, naming the loop's own records) has no effect."""
    ranges: list[tuple[int, int]] = []
    for line in reversed(lines):
        rec = line.rec
        if rec is None or VOID not in rec or line.seq is None or line.offset < since:
            continue
        if any(a <= line.offset < b for a, b in ranges):
            continue
        for pair in rec[VOID] if isinstance(rec[VOID], list) else []:
            if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair):
                ranges.append((pair[0], pair[1]))
    return ranges


def audit(lines: list[Line], key: Key | None) -> tuple[list[Experiment], list[Rejected]]:
    """The records that count, in file order, and the lines that do not, each with its reason."""
    since = key.since if key is not None else 1 << 62  # no key: every unsealed line is legacy
    voided = _voided(lines, since)
    trusted: list[Experiment] = []
    rejected: list[Rejected] = []
    latest: dict[int, Experiment] = {}
    top = max_seq = 0
    for line in lines:
        why = _why(line, since, max_seq, voided)
        if line.seq is not None:
            max_seq = max(max_seq, line.seq)
        if why is None and line.rec is not None and VOID in line.rec:
            continue  # the loop's own void record: not an experiment
        exp = line.exp
        if why is None and exp is None:
            why = "not an experiment record"
        if why is None and exp is not None and line.offset >= since:
            before = latest.get(exp.number)
            if exp.number > top + 1:
                why = f"a number from the future (the next is {top + 1})"
            elif before is not None and before.status in FINAL and not same_verdict(before, exp):
                why = f"a second verdict for an experiment already {before.status}"
        if why is not None:
            rejected.append(Rejected(line, why))
            continue
        assert exp is not None
        trusted.append(exp)
        latest[exp.number] = exp
        top = max(top, exp.number)
    return trusted, rejected


def _why(line: Line, since: int, max_seq: int, voided: list[tuple[int, int]]) -> str | None:
    rec = line.rec
    if rec is None:
        return "a torn or unreadable line"
    if seal.has_seal(rec):
        if line.seq is None:
            return f"{NOT_OURS} (its seal does not match it)"
        if line.offset < since:
            return f"{NOT_OURS} (sealed, but before the ledger's key existed)"
        if line.seq <= max_seq:
            return f"{NOT_OURS} (a copy of an earlier sealed record)"
    elif line.offset >= since:
        return NOT_OURS
    if any(a <= line.offset < b for a, b in voided):
        return f"{NOT_OURS} (written behind the loop's back)"
    return None


def message(name: str, r: Rejected) -> str:
    what = describe(r.line)
    return f"{name} line {r.line.lineno}: {r.why}" + ("" if what in r.why else f" ({what})") + ": ignored"
