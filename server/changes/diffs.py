"""Diffs in one line, and the one pattern for an assignment line (a knob such as `LR = 0.003  # comment`).

`diff_summary` turns a unified diff into "train.py: LR 0.003 -> 0.004" (only assignments changed) or
"train.py: +3 -1 lines". `ASSIGN` is the assignment-line pattern the summaries, the hunks and the editor's
line history share.

Must not import: anything but the standard library. Writes nothing to disk.
"""

from __future__ import annotations

import re

# `NAME = value  # comment`, `NAME: type = value`, `obj.attr = value`; not `NAME == value`.
# Group 1: the target; group 2: the value, without the comment or surrounding blanks.
ASSIGN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(?::[^=]+)?=(?!=)\s*(.*?)\s*(?:#.*)?$")

_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def diff_summary(diff: str) -> str:
    """One line for a unified diff: "train.py: LR 0.003 -> 0.004" when only assignments changed,
    otherwise "train.py: +3 -1 lines"; several files are joined with "; "."""
    files: list[tuple[str, list[str], list[str]]] = []
    old_left = new_left = 0
    lines = diff.splitlines()
    for n, line in enumerate(lines):
        if old_left > 0 or new_left > 0:  # inside a hunk: counts decide, so "--- x" content is a line
            if line.startswith("-"):
                files[-1][1].append(line[1:])
                old_left -= 1
            elif line.startswith("+"):
                files[-1][2].append(line[1:])
                new_left -= 1
            elif line.startswith("\\"):
                pass
            else:
                old_left -= 1
                new_left -= 1
            continue
        if line.startswith("+++ ") and n > 0 and lines[n - 1].startswith("--- "):
            new, old = line[4:].strip(), lines[n - 1][4:].strip()
            name = new if new != "/dev/null" else old
            name = name.split("\t")[0]
            name = name[2:] if name[:2] in ("a/", "b/") else name
            files.append((name, [], []))
        elif (m := _HUNK.match(line)) and files:
            old_left = int(m.group(1)) if m.group(1) is not None else 1
            new_left = int(m.group(2)) if m.group(2) is not None else 1
    parts = []
    for name, removed, added in files:
        if not removed and not added:
            continue
        parts.append(f"{name}: {_knobs(removed, added) or f'+{len(added)} -{len(removed)} lines'}")
    return "; ".join(parts) if parts else "no changes"


def _knobs(removed: list[str], added: list[str]) -> str:
    """ "LR 0.003 -> 0.004, DEPTH 4 -> 5" when the change is only same-name assignments, else ""."""
    if not removed or len(removed) != len(added) or len(removed) > 3:
        return ""
    out = []
    for old, new in zip(removed, added, strict=False):
        mo, mn = ASSIGN.match(old), ASSIGN.match(new)
        if not mo or not mn or mo.group(1) != mn.group(1):
            return ""
        if mo.group(2) == mn.group(2):
            continue  # only a comment changed
        out.append(f"{mo.group(1)} {mo.group(2)} -> {mn.group(2)}")
    return ", ".join(out)
