"""A three-way merge, hunk by hunk, as edits of the user's buffer: the text logic behind "Apply best".

base is the file where the loop started (the lineage's origin), theirs the best commit's file, ours the
user's buffer. Each change base -> theirs (one difflib opcode: a "hunk") is placed into the buffer:
  - "apply": the user left those base lines alone; the hunk becomes an edit of the buffer,
  - "applied": the user's own change there is the same (the buffer already holds it),
  - "conflict": the user changed the same lines differently; it is left out and said so, never guessed.
Two changes conflict when their base ranges overlap, when both insert at one place, or when one inserts
strictly inside the other's range. Changes that only touch (the user's edit on the line above a hunk)
do not: unlike `git merge-file`, adjacent but separate lines merge, since they are separate decisions.

The edits of one `merge` never overlap and are against one buffer text: one WorkspaceEdit, one undo
step. They are HunkPlans (hunks.py), so `hunks.apply_plans` and the LSP's edit builder take them as
they are. Lines are compared without their line endings; edits use the buffer's.

Must not import: pygls, lsprotocol, git, or any other nightlab.server module but changes.hunks/diffs.
Writes nothing to disk.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from nightlab.server.changes import hunks as hk

Region = tuple[int, int, list[str]]  # base lines [i1, i2) become these lines (with their endings)


@dataclass
class Merge:
    """The outcome of one file's three-way merge: a plan per hunk of base -> theirs (in order), and
    for each conflict the buffer line (0-based) of the user's change it met."""

    plans: list[hk.HunkPlan] = field(default_factory=list)
    conflict_lines: dict[int, int] = field(default_factory=dict)  # hunk index -> buffer line

    def of(self, state: str) -> list[hk.HunkPlan]:
        return [p for p in self.plans if p.state == state]

    @property
    def changed(self) -> bool:
        """Whether the buffer would change (a hunk to apply)."""
        return bool(self.of("apply"))


def _changes(a: list[str], b: list[str]) -> list[tuple[int, int, int, int]]:
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)  # autojunk would junk blank lines
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag != "equal"]


def _clash(a: tuple[int, int], b: tuple[int, int]) -> bool:
    (a1, a2), (b1, b2) = a, b
    if a1 < b2 and b1 < a2:  # overlapping lines
        return True
    if a1 == a2 and b1 == b2:
        return a1 == b1  # two insertions at one place: which goes first is a decision
    ins, other = (a1, (b1, b2)) if a1 == a2 else (b1, (a1, a2))
    return other[0] < ins < other[1]  # an insertion inside the other's lines


def _positions(base_n: int, changes: list[tuple[int, int, int, int]]) -> tuple[list[int], list[int]]:
    """For each base line boundary 0..n, the first and the last buffer boundary it maps to (they differ
    where the user inserted lines there; -1 inside the user's changed lines)."""
    lo, hi = [-1] * (base_n + 1), [-1] * (base_n + 1)
    i = j = 0

    def mark(p: int, q: int) -> None:
        lo[p] = q if lo[p] < 0 else min(lo[p], q)
        hi[p] = max(hi[p], q)

    for i1, i2, j1, j2 in [*changes, (base_n, base_n, -1, -1)]:
        for k in range(i, i1 + 1):  # equal lines up to the change
            mark(k, j + k - i)
        if j1 < 0:
            break
        mark(i1, j1)
        mark(i2, j2)
        i, j = i2, j2
    return lo, hi


def _apply(base: list[str], lo: int, hi: int, regions: list[Region]) -> list[str]:
    out, at = [], lo
    for i1, i2, lines in sorted(regions, key=lambda r: (r[0], r[1])):
        out += base[at:i1] + lines
        at = i2
    return out + base[at:hi]


def merge(base_text: str, theirs_text: str, ours_text: str) -> Merge:
    """Place each change base -> theirs into `ours_text` (see the module docstring)."""
    pb, pt, po = hk.split_lines(base_text), hk.split_lines(theirs_text), hk.split_lines(ours_text)
    base, theirs, ours = [c for c, _ in pb], [c for c, _ in pt], [c for c, _ in po]
    raw_b = [c + "\n" * bool(e) for c, e in pb]
    raw_t = [c + "\n" * bool(e) for c, e in pt]
    mine, their = _changes(base, ours), _changes(base, theirs)
    lo, hi = _positions(len(base), mine)
    eol = next((e for _, e in po + pt + pb if e), "\n")
    eof = (not pb or pb[-1][1] != "", not pt or pt[-1][1] != "")
    out = Merge()
    for index, (i1, i2, j1, j2) in enumerate(their):
        old, new = tuple(raw_b[i1:i2]), tuple(raw_t[j1:j2])
        hunk = hk.Hunk(
            index,
            i1,
            i2,
            old,
            new,
            tuple(raw_b[max(0, i1 - 3) : i1]),
            tuple(raw_b[i2 : i2 + 3]),
            j1,
            hk.change_summary(old, new),
            eof if i2 == len(base) else None,
            len(base) - i2,
        )
        met = [m for m in mine if _clash((i1, i2), (m[0], m[1]))]
        if met:
            lo_i, hi_i = min(i1, *(m[0] for m in met)), max(i2, *(m[1] for m in met))
            same = _apply(base, lo_i, hi_i, [(m[0], m[1], ours[m[2] : m[3]]) for m in met]) == _apply(
                base, lo_i, hi_i, [(i1, i2, theirs[j1:j2])]
            )
            if same:
                out.plans.append(hk.HunkPlan(hunk, "applied", "your file already has it"))
            else:
                why = f"your edit at line {met[0][2] + 1} changed these lines"
                out.plans.append(hk.HunkPlan(hunk, "conflict", why))
                out.conflict_lines[index] = met[0][2]
            continue
        start = hi[i1]
        end = start if i1 == i2 else lo[i2]
        rng, text = hk.line_edit(po, start, end, hunk, eol)
        out.plans.append(hk.HunkPlan(hunk, "apply", "three-way", None, rng, text))
    return out


def conflict_text(path: str, m: Merge) -> str:
    """'hunk 2 of train.py (X = 1.0 -> 0.6) meets your edit at line 3' for each conflict, joined by '; '."""
    return "; ".join(
        f"hunk {p.hunk.index + 1} of {path} ({p.hunk.summary}) meets your edit at line "
        f"{m.conflict_lines[p.hunk.index] + 1}"
        for p in m.of("conflict")
    )
