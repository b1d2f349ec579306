"""The offline agent: the default, with no API key and no network. It turns the knobs it can see.

Knobs are the UPPER_CASE top-level constants of the editable Python files whose value is an int,
float or bool literal (negative and scientific forms included), read with `ast`. Each proposal changes
exactly one knob: floats are scaled (x2, x0.5, x1.5, x0.67), small ints stepped by one, powers of two
doubled or halved, other ints scaled, booleans flipped. A (file, name, value) already tried (seen in
the history's `meta["knob"]`, or the current value) is never proposed again; when every candidate at
the current step sizes has been tried, the steps widen; when nothing is left, it says so.

A direction that was kept on a knob becomes more likely on that knob; one that was discarded or
crashed, less. The choice is a seeded draw over the history, so the same seed and history give the
same proposal (a resumed loop proposes what the uninterrupted one would have).

Must not import: git, torch, the store, runner, ledger or engine. Never writes to disk.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from nightlab.server.agents.base import AgentError
from nightlab.server.core.types import ExperimentContext, FileEdit, HistoryItem, Proposal

Value = bool | int | float
_UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")
# Names of knobs that are fractions (valid in [0, 1)): scaling one above 1 is a sure crash.
_FRACTION = re.compile(r"BETA|MOMENTUM|RATIO|FRAC|DROPOUT|PROB|EMA")

# Step sizes, narrowest first; a level is used once every candidate of the levels before it was tried.
FLOAT_LEVELS = [(2.0, 0.5, 1.5, 0.67), (4.0, 0.25, 3.0, 0.33), (1.25, 0.8, 8.0, 0.125), (1.1, 0.9, 16.0, 0.0625)]
INT_LEVELS = [(1.5, 0.67), (2.0, 0.5), (3.0, 0.33), (1.25, 0.8)]  # ints too large to step by one
ZERO_FLOAT_LEVELS = [(0.1, 0.01), (0.001, 0.3)]  # a 0.0 cannot be scaled: try a few magnitudes
SMALL_INT = 12  # |v| <= this steps by 1, 2, 3, 4 (DEPTH 4 -> 5 is a real experiment; 4 -> 8 is a leap)
LEVELS = 4
# Weight multipliers for a candidate, per past experiment on the same knob in the same direction.
WEIGHT = {"keep": 3.0, "discard": 0.6, "crash": 0.3}


@dataclass(frozen=True)
class Knob:
    file: str
    name: str
    value: Value
    text: str  # the value as written, e.g. "3e-4"
    line: str  # the whole assignment line, without its newline: the edit's SEARCH
    start: int  # the value's span in `line` (characters)
    end: int

    @property
    def kind(self) -> str:
        return "bool" if isinstance(self.value, bool) else "int" if isinstance(self.value, int) else "float"


@dataclass(frozen=True)
class Candidate:
    knob: Knob
    new: Value
    text: str
    step: str  # "x2", "+1", "flip" ...
    level: int

    @property
    def direction(self) -> str:
        if self.knob.kind == "bool":
            return "on" if self.new else "off"
        return "up" if self.new > self.knob.value else "down"

    @property
    def description(self) -> str:
        return f"{self.knob.name} {self.knob.text} -> {self.text}"


# --------------------------------------------------------------------------------------------------
# reading the knobs


def _literal(node: ast.AST) -> Value | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (bool, int, float)):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, (ast.USub, ast.UAdd))
        and isinstance(node.operand, ast.Constant)
        and type(node.operand.value) in (int, float)
    ):
        value = node.operand.value
        assert isinstance(value, (int, float))
        return -value if isinstance(node.op, ast.USub) else value
    return None


def find_knobs(path: str, text: str) -> list[Knob]:
    """The tunable constants of one file, in file order. A file that does not parse has none."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    lines = text.splitlines()
    assigned: dict[str, int] = {}
    for node in tree.body:  # a name bound twice at top level: changing the first may change nothing
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            for n in ast.walk(t) if t is not None else []:
                if isinstance(n, ast.Name):
                    assigned[n.id] = assigned.get(n.id, 0) + 1
    knobs = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        value = node.value
        if (
            not isinstance(target, ast.Name)
            or not _UPPER.match(target.id)
            or assigned[target.id] != 1
            or value is None
            or node.lineno != node.end_lineno
            or node.col_offset != 0
        ):
            continue
        lit = _literal(value)
        if lit is None:
            continue
        line = lines[node.lineno - 1]
        raw = line.encode("utf-8")  # ast offsets count UTF-8 bytes
        rest = raw[node.end_col_offset :].decode("utf-8").strip()
        if rest and not rest.startswith("#"):
            continue  # "A = 1; B = 2": not a whole line of its own
        start = len(raw[: value.col_offset].decode("utf-8"))
        vtext = raw[value.col_offset : value.end_col_offset].decode("utf-8")
        knobs.append(Knob(path, target.id, lit, vtext, line, start, start + len(vtext)))
    return knobs


# --------------------------------------------------------------------------------------------------
# candidate values


def _key(v: Any) -> tuple:
    if isinstance(v, bool):
        return ("b", v)
    try:
        return ("n", float(f"{float(v):.6g}"))  # 0.0006 == 6e-4, whatever the spelling
    except (TypeError, ValueError):
        return ("?", repr(v))


def _fmt_float(x: float, like: str) -> str:
    if "e" in like.lower():  # keep the author's notation: 3e-4 -> 6e-4, not 0.0006
        mant, exp = f"{x:.3e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    return repr(x)


def _candidates(knob: Knob, level: int) -> list[Candidate]:
    v = knob.value
    out: list[tuple[Value, str]] = []
    if knob.kind == "bool":
        if level == 0:
            out.append((not v, "flip"))
    elif knob.kind == "float":
        if v == 0.0:
            if level < len(ZERO_FLOAT_LEVELS):
                out += [(x, "from zero") for x in ZERO_FLOAT_LEVELS[level]]
        else:
            for f in FLOAT_LEVELS[level]:
                new = float(f"{v * f:.4g}")
                if new >= 1 and _FRACTION.search(knob.name) and 0 < v < 1:
                    # A beta, momentum or ratio must stay below 1: close the distance to 1 instead.
                    closer = float(f"{1 - (1 - v) / f:.6g}")
                    if closer < 1:
                        out.append((closer, f"1-(1-x)/{f:g}"))
                else:
                    out.append((new, f"x{f:g}"))
    else:
        step = level + 1
        if abs(v) <= SMALL_INT:
            out += [(v + step, f"+{step}"), (v - step, f"-{step}")]
        elif isinstance(v, int) and v > 0 and v & (v - 1) == 0:  # a power of two stays one
            out += [(v * 2**step, f"x{2**step}"), (v // 2**step, f"/{2**step}")]
        else:
            out += [(int(round(v * f)), f"x{f:g}") for f in INT_LEVELS[level]]
    cands, seen = [], {_key(v)}
    for new, step_label in out:
        # Keep the sign: a positive size or rate flipping to zero or negative is a crash, not research.
        if knob.kind != "bool" and ((v > 0 and new <= 0) or (v == 0 and new < 0) or (v < 0 and new >= 0)):
            continue
        if _key(new) in seen:
            continue
        seen.add(_key(new))
        text = _fmt_float(new, knob.text) if knob.kind == "float" else str(new)
        cands.append(Candidate(knob, new, text, step_label, level))
    return cands


# --------------------------------------------------------------------------------------------------
# the agent


def _knob_meta(item: HistoryItem) -> dict[str, Any] | None:
    knob = item.meta.get("knob") if isinstance(item.meta, dict) else None
    if isinstance(knob, dict) and {"file", "name", "old", "new"} <= knob.keys():
        return knob
    return None


def _direction(old: Any, new: Any) -> str:
    if isinstance(new, bool):
        return "on" if new else "off"
    try:
        return "up" if new > old else "down"
    except TypeError:
        return ""


class OfflineAgent:
    name = "offline"

    def __init__(self, options: dict[str, Any] | None = None, seed: int = 0):
        # [agent] may hold keys meant for other agents (a model name ...); the offline agent needs none.
        self.options = dict(options or {})
        self.seed = seed

    async def propose(self, ctx: ExperimentContext) -> Proposal:
        return self.propose_now(ctx)

    def propose_now(self, ctx: ExperimentContext) -> Proposal:
        """The synchronous core of `propose` (no I/O, so there is nothing to await)."""
        knobs = [k for path in ctx.editable if path in ctx.files for k in find_knobs(path, ctx.files[path])]
        if not knobs:
            raise AgentError(
                "the offline agent found no UPPER_CASE int, float or bool constants in "
                f"{', '.join(ctx.editable)}; add some (e.g. LR = 3e-4) or use another agent"
            )
        tried: dict[tuple[str, str], set[tuple]] = {}
        for k in knobs:
            tried.setdefault((k.file, k.name), set()).add(_key(k.value))
        moves: dict[tuple[str, str], list[tuple[str, str, int]]] = {}  # knob -> (direction, status, number)
        for item in ctx.history:
            m = _knob_meta(item)
            if m is None:
                continue
            where = (str(m["file"]), str(m["name"]))
            tried.setdefault(where, set()).update({_key(m["old"]), _key(m["new"])})
            moves.setdefault(where, []).append(
                (m.get("direction") or _direction(m["old"], m["new"]), item.status, item.number)
            )
        busy = set(ctx.in_flight)
        for level in range(LEVELS):
            cands = [
                c
                for k in knobs
                for c in _candidates(k, level)
                if _key(c.new) not in tried[(k.file, k.name)] and c.description not in busy
            ]
            if cands:
                break
        else:
            raise AgentError(
                f"the offline agent has tried every value it knows for the {len(knobs)} constants of "
                f"{', '.join(sorted({k.file for k in knobs}))}, at its widest steps; stop the loop or use another agent"
            )
        weights = []
        for c in cands:
            w = 1.0
            for direction, status, _ in moves.get((c.knob.file, c.knob.name), []):
                if direction == c.direction:
                    w *= WEIGHT.get(status, 1.0)
            weights.append(w)
        pick = self._rng(ctx).choices(cands, weights=weights, k=1)[0]
        return self._proposal(pick, ctx, moves.get((pick.knob.file, pick.knob.name), []))

    def _rng(self, ctx: ExperimentContext) -> random.Random:
        # A str seed is hashed with sha512 by `random`: stable across processes, unlike hash().
        history = [(h.number, h.status, _knob_meta(h)) for h in ctx.history]
        digest = hashlib.sha256(json.dumps(history, sort_keys=True, default=repr).encode()).hexdigest()
        return random.Random(f"offline|{self.seed}|{ctx.seed}|{digest}")

    def _proposal(self, c: Candidate, ctx: ExperimentContext, moves: list[tuple[str, str, int]]) -> Proposal:
        k = c.knob
        goal = f"{'lower' if ctx.direction == 'lower' else 'raise'} {ctx.metric_name}"
        if k.kind == "bool":
            hypothesis = f"Turning {k.name} {'on' if c.new else 'off'} may {goal} within the fixed budget."
        else:
            verb = "Raising" if c.direction == "up" else "Lowering"
            hypothesis = f"{verb} {k.name} from {k.text} to {c.text} ({c.step}) may {goal} within the fixed budget."
        helped = [n for d, s, n in moves if d == c.direction and s == "keep"]
        if helped:
            hypothesis += f" The same direction on {k.name} was kept before (experiment {helped[-1]})."
        replace = k.line[: k.start] + c.text + k.line[k.end :]
        return Proposal(
            description=c.description,
            edits=[FileEdit(path=k.file, search=k.line, replace=replace)],
            hypothesis=hypothesis,
            agent=self.name,
            meta={
                "knob": {
                    "file": k.file,
                    "name": k.name,
                    "old": k.value,
                    "new": c.new,
                    "direction": c.direction,
                    "step": c.step,
                    "level": c.level,
                }
            },
        )
