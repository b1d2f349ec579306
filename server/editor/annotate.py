"""What the editor shows on a file, as plain data: apply-actions, lenses, hover history, inlay hints
and crash locations, computed from the ledger, the experiments' file texts and the user's buffer.

lsp/ turns these into LSP types; this module knows nothing of LSP.
Must not import: pygls, lsprotocol.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from nightlab.server.changes import hunks as hk
from nightlab.server.changes.diffs import ASSIGN as _ASSIGN  # the one assignment-line pattern
from nightlab.server.core.types import Experiment

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def verdict_label(exp: Experiment, metric: str = "val_bpb", direction: str = "lower") -> str:
    """'-0.0031 bpb (z = -3.9, better)' style: the delta, and the z the noise policy measured when it did
    ('(t = -10.6, paired, better)' for a verdict on paired differences), signed as the delta is (the
    policy stores z as the improvement: positive is better whichever the direction), with the word."""
    unit = "bpb" if metric == "val_bpb" else metric
    parts = []
    if exp.delta is not None:
        parts.append(f"{exp.delta:+.4f} {unit}")
    z = exp.decision.get("z")
    if isinstance(z, (int, float)) and not isinstance(z, bool):
        signed = (-z if direction == "lower" else z) + 0.0  # + 0.0: no "-0.0"
        word = "better" if z > 0 else "worse" if z < 0 else "no different"
        # a paired verdict's z is Student's t of the differences at shared seeds
        name = "t" if isinstance(exp.decision.get("paired"), dict) else "z"
        parts.append(f"({name} = {signed:+.1f}{', paired' if name == 't' else ''}, {word})")
    return " ".join(parts) or (f"{exp.metric:.4f} {unit}" if exp.metric is not None else exp.status)


def review_text(exp: Experiment, in_file: str | None = None) -> str:
    """What the person said and what their files hold, each on its own: 'review: accepted
    (2026-12-01T15:40:00+00:00); in your file: none' ('' when neither is known). An accepted change may
    have been undone since, and a rejected one typed in by hand: the two are never merged into one."""
    parts = []
    if exp.review:
        parts.append(f"review: {exp.review}" + (f" ({exp.reviewed_at})" if exp.reviewed_at else ""))
    if in_file:
        parts.append(f"in your file: {in_file}")
    return "; ".join(parts)


@dataclass
class ApplyAction:
    number: int
    title: str
    path: str
    edits: list[hk.HunkPlan]  # the plans to apply (state "apply"), against one buffer version
    conflicts: int = 0
    hunk: int | None = None  # a single hunk's action, else the whole experiment


@dataclass
class FileTexts:
    """An experiment's text of one file at its parent and at its commit."""

    exp: Experiment
    parent: str
    new: str
    plans: list[hk.HunkPlan] = field(default_factory=list)
    # what applying its own change brings when it was trained on top of other kept changes:
    # "#7's change alone; #7 was trained on top of #4 and #5" (best.describe), else ""
    contains: str = ""


def reviewable(experiments: list[Experiment], limit: int = 10) -> list[Experiment]:
    """Kept experiments a person may still want to take, newest first (not the baseline, not rejected)."""
    out = [
        e
        for e in reversed(experiments)
        if e.status == "keep" and not e.is_baseline and e.commit and e.review != "rejected"
    ]
    return out[:limit]


def apply_actions(
    texts: list[FileTexts], buffer: str, path: str, metric: str = "val_bpb", direction: str = "lower"
) -> list[ApplyAction]:
    """For each experiment whose change is not (all) in the buffer: one action for the whole change,
    one per hunk when it has several; a change with a hunk that no longer applies gets an action that
    opens its diff instead (conflicts > 0, no edits)."""
    actions = []
    for t in texts:
        plans = hk.plan(t.parent, t.new, buffer)
        t.plans = plans
        todo = [p for p in plans if p.state == "apply"]
        conflicts = [p for p in plans if p.state == "conflict"]
        if not todo and not conflicts:
            continue  # already in the buffer (or no change to this file)
        label = verdict_label(t.exp, metric, direction)
        head = f"experiment #{t.exp.number}: {label} ({t.exp.description})"
        if conflicts:
            actions.append(
                ApplyAction(
                    t.exp.number,
                    f"Open the diff of {head}: {len(conflicts)} hunk(s) no longer apply here",
                    path,
                    [],
                    conflicts=len(conflicts),
                )
            )
            continue
        says = f"; {t.contains}" if t.contains else ""  # never silent about a change that was never trained alone
        actions.append(ApplyAction(t.exp.number, f"Apply {head}{says}", path, todo))
        if len(todo) > 1:
            for p in todo:
                actions.append(
                    ApplyAction(
                        t.exp.number,
                        f"Apply hunk {p.hunk.index + 1} of #{t.exp.number}: {p.hunk.summary}",
                        path,
                        [p],
                        hunk=p.hunk.index,
                    )
                )
    return actions


def crash_location(
    exp: Experiment, editable: list[str], exp_text: dict[str, str], buffers: dict[str, str]
) -> tuple[str, int, str] | None:
    """(path, 0-based line in the buffer, message) for a crashed experiment whose traceback points
    into an editable file: the deepest such frame, mapped by the line's text onto the user's buffer."""
    frames = [(f, int(n)) for f, n in _FRAME.findall(exp.error or "")]
    for filename, line in reversed(frames):
        path = next((p for p in editable if filename.replace("\\", "/").endswith("/" + p) or filename == p), None)
        if path is None:
            continue
        lines = exp_text.get(path, "").splitlines()
        target = lines[line - 1].strip() if 0 < line <= len(lines) else ""
        buf = buffers.get(path, exp_text.get(path, "")).splitlines()
        found = [i for i, text in enumerate(buf) if target and text.strip() == target]
        at = min(found, key=lambda i: abs(i - (line - 1))) if found else min(max(line - 1, 0), max(len(buf) - 1, 0))
        reason = exp.decision_reason or "crashed"
        return path, at, f"experiment #{exp.number} ({exp.description}) crashed here: {reason}"
    return None


def _changed(h: hk.Hunk) -> tuple[list[str], list[str]]:
    """The lines a hunk removes and adds. A hunk that merges two nearby changes also holds the unchanged
    lines between them in both old_lines and new_lines: those are not the experiment's."""
    old, new = Counter(h.old_lines), Counter(h.new_lines)
    return list((old - new).elements()), [x for x in h.new_lines if x in new - old]


def line_history(
    texts: list[FileTexts],
    line: str,
    metric: str = "val_bpb",
    limit: int = 12,
    direction: str = "lower",
    in_file: dict[int, str | None] | None = None,
) -> list[str]:
    """Markdown lines, newest first: the experiments that changed this line (the same assignment
    target, e.g. any `LR = ...`, or the same text), each with its verdict and, beside it, the person's
    review and how much of its change their files hold (`in_file`, by number: review.py)."""
    name = _ASSIGN.match(line)
    key = name.group(1) if name else line.strip()
    if not key:
        return []
    out = []
    for t in texts:
        for h in hk.parse_hunks(t.parent, t.new):
            removed, added = _changed(h)
            touched = [
                x
                for x in (*removed, *added)
                if (name and (m := _ASSIGN.match(x)) and m.group(1) == key) or (not name and x.strip() == key)
            ]
            if touched:
                new = next((x.strip() for x in added if x in touched), "")
                e = t.exp
                value = f"`{new}`" if new else "(removed)"
                said = review_text(e, (in_file or {}).get(e.number))
                label = verdict_label(e, metric, direction)
                out.append(
                    f"- **#{e.number}** {e.status}: {value} {label} - {e.description}" + (f"; {said}" if said else "")
                )
                break
        if len(out) >= limit:
            break
    return out


def chain_hints(
    texts: list[FileTexts], buffer: str, metric: str = "val_bpb", direction: str = "lower"
) -> list[tuple[int, str]]:
    """(0-based line, label) for the lines of the buffer that kept experiments wrote."""
    lines = buffer.splitlines()
    hints: dict[int, str] = {}
    for t in texts:
        for h in hk.parse_hunks(t.parent, t.new):
            for new in _changed(h)[1]:
                stripped = new.strip()
                if not stripped:
                    continue
                for i, text in enumerate(lines):
                    if text.strip() == stripped and i not in hints:
                        hints[i] = f" #{t.exp.number} {verdict_label(t.exp, metric, direction)}"
                        break
    return sorted(hints.items())
