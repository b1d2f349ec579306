"""An experiment's change as hunks, placed into the user's open buffer: the text logic behind "Apply
experiment #17" code actions and "which experiments touched this line" hovers.

The buffer may differ from the experiment's parent (the user edited it, or applied other experiments),
so each hunk is *located* before it becomes an edit. Its old lines ("found") and its new lines ("already
applied") are searched together, level by level, the first level with a hit deciding:
  1. with their context, exactly;  2. with their context, whitespace-insensitively (`git diff -w`; the
  new lines are re-indented as the buffer indents the old);  3. and 4. the same without the context,
  trusted only when unique, not all blank, and not when both the old and the new lines turn up.
With context, the hit nearest the original line wins, distance counted from the top and from the end
(lines inserted above move a hunk from the one, not the other). A hunk found nowhere is a `conflict`: the
client opens a diff instead of applying a "99% similar" edit to the wrong place. Looking for the new lines
as early as the old keeps a second "apply" of an experiment from changing another copy of a common line.

Lines are compared without their line endings. Hunk lines end in "\n" (CRLF normalised) except the last
line of a file without a final newline; edits use the buffer's line ending. Positions are 0-based (line,
character); characters count Python code points, the LSP layer converts them to the negotiated encoding.
The edits of one `plan` are against one buffer text and never overlap: one WorkspaceEdit, one undo step.
Pure insertions are placed by their context, so `context` must be at least 1.

Must not import: pygls, lsprotocol, git, or any other nightlab.server module but changes.diffs.
Writes nothing to disk.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from nightlab.server.changes.diffs import ASSIGN

Found = Literal["found", "applied"]  # the hunk's old side was found (to apply), or its new side (applied)
How = Literal["exact", "moved", "whitespace", "no-context"]

_EOL = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Hunk:
    """One change of an experiment: parent lines [start, end) become `new_lines`."""

    index: int  # 0-based position among the experiment's hunks
    start: int  # parent line range, 0-based, end exclusive (start == end: a pure insertion)
    end: int
    old_lines: tuple[str, ...]
    new_lines: tuple[str, ...]
    before: tuple[str, ...]  # up to `context` unchanged lines above and below
    after: tuple[str, ...]
    new_start: int  # where new_lines begin in the experiment text
    summary: str  # "MATRIX_LR = 0.02 -> 0.04" or "+3 -1 lines"
    eof: tuple[bool, bool] | None = None  # on the hunk at the end: do (parent, experiment) end in "\n"
    tail: int = 0  # parent lines after the hunk: lines inserted above move a hunk, not its distance to the end


@dataclass(frozen=True)
class LocatedHunk:
    """Where a hunk sits in a buffer: lines [start, end) hold its old lines ("found") or new ("applied")."""

    start: int
    end: int
    state: Found
    how: How
    indent: tuple[str, str] = ("", "")  # (hunk's, buffer's) indentation when they differ


@dataclass(frozen=True)
class HunkPlan:
    """What to do with one hunk in one buffer version. For "apply", `range` is (start_line, start_char,
    end_line, end_char) in the buffer and `text` its replacement."""

    hunk: Hunk
    state: Literal["apply", "applied", "conflict"]
    reason: str  # for people: "exact", "moved by +3 lines", "already applied", "old lines not found"...
    located: LocatedHunk | None = None
    range: tuple[int, int, int, int] | None = None
    text: str = ""


# --------------------------------------------------------------------------------------------------
# hunks


def _split(text: str) -> list[tuple[str, str]]:
    """(content, line ending) per line; the LSP's line breaks only (\\n, \\r\\n, \\r), not str.splitlines'."""
    out, pos = [], 0
    for m in _EOL.finditer(text):
        out.append((text[pos : m.start()], m.group()))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], ""))
    return out


split_lines = _split  # merge.py's too


def _key(line: str) -> str:
    return line.rstrip("\r\n")


def _ws(line: str) -> str:
    return "".join(line.split())  # as `git diff -w`: "LR=0.1" matches "LR = 0.1"


def _summary(old: tuple[str, ...], new: tuple[str, ...]) -> str:
    if len(old) == len(new) == 1:
        mo, mn = ASSIGN.match(_key(old[0])), ASSIGN.match(_key(new[0]))
        if mo and mn and mo.group(1) == mn.group(1) and mo.group(2) != mn.group(2):
            return f"{mo.group(1)} = {mo.group(2)} -> {mn.group(2)}"
        a, b = _key(old[0]).strip(), _key(new[0]).strip()
        if a != b and len(a) + len(b) <= 76:
            return f"{a} -> {b}"
    return f"+{len(new)} -{len(old)} lines"


change_summary = _summary  # merge.py names its hunks the same way


def parse_hunks(parent_text: str, experiment_text: str, context: int = 3) -> list[Hunk]:
    """The change parent -> experiment as hunks (difflib over whole lines, unified-diff grouping)."""
    return list(_hunks(parent_text, experiment_text, context))


@functools.lru_cache(maxsize=512)  # hovers ask again and again for the same experiments
def _hunks(parent_text: str, experiment_text: str, context: int) -> tuple[Hunk, ...]:
    pa, pb = _split(parent_text), _split(experiment_text)
    a, b = [c for c, _ in pa], [c for c, _ in pb]  # contents: a missing final newline is no change
    ra, rb = [c + "\n" * bool(e) for c, e in pa], [c + "\n" * bool(e) for c, e in pb]
    eof = (not pa or pa[-1][1] != "", not pb or pb[-1][1] != "")  # ends with a newline (or is empty)
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)  # autojunk would junk blank lines
    out = [_group_hunk(index, group, ra, rb, eof) for index, group in enumerate(sm.get_grouped_opcodes(context))]
    if eof[0] != eof[1] and not any(h.eof for h in out):  # the final newline changed away from a hunk
        out = _with_final_newline(out, ra, rb, eof, context)
    return tuple(out)


def _group_hunk(
    index: int, group: list[tuple[str, int, int, int, int]], ra: list[str], rb: list[str], eof: tuple[bool, bool]
) -> Hunk:
    """The hunk of one group of difflib opcodes: its changed lines, and the equal ones around them as context."""
    head = group[0] if group[0][0] == "equal" else None
    tail = group[-1] if group[-1][0] == "equal" else None
    changed = group[1 if head else 0 : len(group) - (1 if tail else 0)]
    i1, i2, j1, j2 = changed[0][1], changed[-1][2], changed[0][3], changed[-1][4]
    old, new = tuple(ra[i1:i2]), tuple(rb[j1:j2])
    return Hunk(
        index,
        i1,
        i2,
        old,
        new,
        tuple(ra[head[1] : i1]) if head else (),
        tuple(ra[i2 : tail[2]]) if tail else (),
        j1,
        _summary(old, new),
        eof if i2 == len(ra) else None,
        len(ra) - i2,
    )


def _with_final_newline(
    out: list[Hunk], ra: list[str], rb: list[str], eof: tuple[bool, bool], context: int
) -> list[Hunk]:
    """`out` with the change of the final newline: the last hunk grows to the end when it is near it,
    else a hunk of the last line alone is added."""
    n = len(ra)
    if out and n - 1 - out[-1].end <= context:
        h = out[-1]
        grown = dataclasses.replace(
            h, end=n, old_lines=tuple(ra[h.start :]), new_lines=tuple(rb[h.new_start :]), after=(), eof=eof, tail=0
        )
        return [*out[:-1], grown]
    last = Hunk(
        len(out),
        n - 1,
        n,
        (ra[-1],),
        (rb[-1],),
        tuple(ra[max(0, n - 1 - context) : n - 1]),
        (),
        len(rb) - 1,
        "newline at end of file" if eof[1] else "no newline at end of file",
        eof,
        0,
    )
    return [*out, last]


# --------------------------------------------------------------------------------------------------
# locating


def _find(keys: list[str], needle: list[str]) -> list[int]:
    m = len(needle)
    return [i for i in range(len(keys) - m + 1) if keys[i : i + m] == needle]


def _indent(s: str) -> str:
    return s[: len(s) - len(s.lstrip())]


def locate(hunk: Hunk, buffer_lines: list[str]) -> LocatedHunk | None:
    """Where `hunk` sits in `buffer_lines` (with or without line endings); None when neither its old
    nor its new lines can be placed (a conflict). See the module docstring for the order of attempts."""
    exact = [_key(x) for x in buffer_lines]
    loose = [_ws(x) for x in exact]
    old, new = [_key(x) for x in hunk.old_lines], [_key(x) for x in hunk.new_lines]
    before, after = [_key(x) for x in hunk.before], [_key(x) for x in hunk.after]

    def dist(start: int, length: int) -> tuple[int, int]:  # from the original line: top and end
        top, end = abs(start - hunk.start), abs(len(exact) - start - length - hunk.tail)
        return min(top, end), top + end

    def search(state: Found, window: list[str], off: int, ws: bool, ctx: bool) -> LocatedHunk | None:
        # an empty window (an empty parent) fits an empty buffer only; when only the final newline
        # changes, old == new and `plan` tells whether it is applied
        if (
            (not window and exact)
            or (state == "applied" and old == new)
            or (not ctx and not any(x.strip() for x in window))
        ):
            return None
        hits = _find(loose if ws else exact, [_ws(x) for x in window] if ws else window)
        if not hits or (not ctx and len(hits) > 1):  # without context only a unique match is trusted
            return None
        body = old if state == "found" else new
        pos = min(hits, key=lambda p: (dist(p + off, len(body)), p))  # nearest the original line
        start = pos + off
        how: How = "whitespace" if ws else "no-context" if not ctx else "exact" if start == hunk.start else "moved"
        indent = ("", "")
        if ws:  # re-indent the new lines as the buffer indents the nearest non-blank line
            near = [*range(off, off + len(body)), *range(off - 1, -1, -1), *range(off + len(body), len(window))]
            pairs = [(window[k], exact[pos + k]) for k in near if window[k].strip()]
            indent = (_indent(pairs[0][0]), _indent(pairs[0][1])) if pairs else indent
        return LocatedHunk(start, start + len(body), state, how, indent if indent[0] != indent[1] else ("", ""))

    for ctx in (True, False):
        for ws in (False, True):
            if ctx:
                found = search("found", before + old + after, len(before), ws, True)
                applied = search("applied", before + new + after, len(before), ws, True)
            else:  # a pure insertion has no old lines: anchor it on one side of its context instead
                anchors = [(old, 0)] if old else [(before, len(before)), (after, 0)]
                found = next((h for w, off in anchors if (h := search("found", w, off, ws, False))), None)
                applied = search("applied", new, 0, ws, False)
            if found and applied:  # with context the nearer wins; without, an insertion's anchor says
                if ctx:  # nothing, and old and new lines both there say nothing either
                    return min((found, applied), key=lambda h: dist(h.start, h.end - h.start))
                return None if old else applied
            if found or applied:
                return found or applied
    return None


# --------------------------------------------------------------------------------------------------
# planning and applying


def _edit(
    buf: list[tuple[str, str]], start: int, end: int, hunk: Hunk, eol: str, indent: tuple[str, str]
) -> tuple[tuple[int, int, int, int], str]:
    """Replace buffer lines [start, end) by the hunk's new lines: (range, text)."""
    n = len(buf)
    open_end = n > 0 and buf[-1][1] == ""  # the buffer's last line has no line ending
    texts = [_key(x) for x in hunk.new_lines]
    if indent[0] != indent[1]:
        texts = [indent[1] + t[len(indent[0]) :] if t.strip() and t.startswith(indent[0]) else t for t in texts]
    if end < n:
        terminated = True
    else:  # at the buffer's end: keep its final-newline state unless the hunk changes exactly that
        old_t, new_t = hunk.eof or (True, True)
        terminated = (not open_end) if old_t == new_t else new_t
    text = eol.join(texts) + (eol if texts and terminated else "")
    if start < n and not texts and not terminated and start > 0:  # the line above loses its newline
        first = (start - 1, len(buf[start - 1][0]))
    elif start < n:
        first = (start, 0)
    elif open_end:  # inserting after an unterminated last line: end that line first
        first, text = (n - 1, len(buf[-1][0])), eol + text
    else:
        first = (n, 0)
    last = (end, 0) if end < n else (n - 1, len(buf[-1][0])) if open_end else (n, 0)
    return (*first, *last), text


def line_edit(
    buf: list[tuple[str, str]], start: int, end: int, hunk: Hunk, eol: str
) -> tuple[tuple[int, int, int, int], str]:
    """Buffer lines [start, end) (of `split_lines(buffer)`) replaced by the hunk's new lines: (range, text)."""
    return _edit(buf, start, end, hunk, eol, ("", ""))


def _starts(buf: list[tuple[str, str]]) -> list[int]:  # each line's offset, then the text's length
    out = [0]
    for c, e in buf:
        out.append(out[-1] + len(c) + len(e))
    return out


def plan(parent_text: str, experiment_text: str, buffer_text: str, context: int = 3) -> list[HunkPlan]:
    """One HunkPlan per hunk of parent -> experiment, against `buffer_text`. Apply plans never overlap
    (a later hunk that would overlap an earlier one becomes a conflict; reasons count hunks from 1)."""
    buf, context = _split(buffer_text), max(1, context)
    keys, starts = [c for c, _ in buf], _starts(buf)
    eol = next((e for _, e in buf + _split(experiment_text) + _split(parent_text) if e), "\n")
    plans: list[HunkPlan] = []
    taken: list[tuple[int, int, int]] = []  # (start, end, hunk index) of the apply plans so far
    for h in parse_hunks(parent_text, experiment_text, context):
        loc = locate(h, keys)
        if loc is None:
            plans.append(HunkPlan(h, "conflict", "old lines not found in the buffer"))
            continue
        if loc.state == "applied":
            plans.append(HunkPlan(h, "applied", "already applied", loc))
            continue
        rng, text = _edit(buf, loc.start, loc.end, h, eol, loc.indent)
        if buffer_text[starts[rng[0]] + rng[1] : starts[rng[2]] + rng[3]] == text:  # e.g. a final newline
            plans.append(HunkPlan(h, "applied", "already applied", loc))
            continue
        clash = next((i for s, e, i in taken if loc.start < e and s < loc.end or loc.start == s), None)
        if clash is not None:
            plans.append(HunkPlan(h, "conflict", f"overlaps hunk {clash + 1} in the buffer", loc))
            continue
        taken.append((loc.start, loc.end, h.index))
        shift = loc.start - h.start
        reason = {
            "moved": f"moved by {shift:+d} lines",
            "whitespace": "whitespace-insensitive match",
            "no-context": "context changed; old lines matched alone",
        }.get(loc.how, loc.how)
        plans.append(HunkPlan(h, "apply", reason, loc, rng, text))
    return plans


def apply_plans(buffer_text: str, plans: Iterable[HunkPlan]) -> str:
    """`buffer_text` with the edits of the "apply" plans among `plans` (all from one `plan` call on this
    text, or a subset of them); the others are skipped. Overlapping edits raise ValueError."""
    starts = _starts(_split(buffer_text))
    edits = sorted(
        (
            (starts[p.range[0]] + p.range[1], starts[p.range[2]] + p.range[3], p.text)
            for p in plans
            if p.state == "apply" and p.range
        ),
        reverse=True,
    )
    out, limit = buffer_text, len(buffer_text) + 1
    for a, b, text in edits:
        if b > limit or (b == limit and a == b):
            raise ValueError("overlapping edits")
        out, limit = out[:a] + text + out[b:], a
    return out
