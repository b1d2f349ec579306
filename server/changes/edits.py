"""SEARCH/REPLACE edits, applied in memory: parse the aider-style block format, apply edits to file texts.
(A diff in one line, `diff_summary`, is diffs.py's; it is re-exported here.)

Application is exact first. Only when the exact text is absent does it match line by line with growing
tolerance (trailing whitespace, then a different indentation, re-indenting the replacement to fit). A
match must be unique at the level that found it: an ambiguous or missing match is an `EditError` saying
which edit and why, never a guess ("99% similar" diffs applied to the wrong place are what users of
other tools complain about).

Must not import: git, torch, the store, runner, agents or engine. Writes nothing to disk.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from os.path import commonprefix
from pathlib import PurePosixPath

from nightlab.server.changes.diffs import diff_summary  # noqa: F401  (re-exported: its old home)
from nightlab.server.core.types import FileEdit


class EditError(Exception):
    """An edit that cannot be applied or parsed; `str(e)` says which edit, which file and why."""

    def __init__(self, message: str, index: int | None = None, path: str | None = None, reason: str = ""):
        super().__init__(message)
        self.index = index
        self.path = path
        self.reason = reason or message


def _norm(path: str) -> str:
    p = str(path).strip().replace("\\", "/")
    return str(PurePosixPath(p)) if p else p


# --------------------------------------------------------------------------------------------------
# applying


def apply_edits(
    files: dict[str, str], edits: list[FileEdit], editable: Iterable[str], protected: Iterable[str]
) -> dict[str, str]:
    """Apply edits in order (a later edit sees the earlier ones). Returns path -> new text for the files
    whose text changed. `files` holds the current texts; a missing editable file counts as empty, so an
    edit with an empty SEARCH creates it."""
    editable_set = {_norm(p) for p in editable}
    protected_set = {_norm(p) for p in protected}
    work = {_norm(p): t for p, t in files.items()}
    original = dict(work)
    for i, edit in enumerate(edits, start=1):
        path = _norm(edit.path)

        def fail(reason: str, i: int = i, path: str = path) -> EditError:
            return EditError(f"edit {i} of {len(edits)} on {path}: {reason}", index=i, path=path, reason=reason)

        if path in protected_set:
            raise fail("file is protected")
        if path not in editable_set:
            raise fail(f"not an editable file (editable: {', '.join(sorted(editable_set))})")
        text = work.get(path, "")
        try:
            work[path] = _apply_one(text, edit.search, edit.replace)
        except _Fail as e:
            raise fail(str(e)) from None
    return {p: t for p, t in work.items() if t != original.get(p)}


class _Fail(Exception):
    pass


def _apply_one(text: str, search: str, replace: str) -> str:
    if not search.strip():
        if text.strip():
            raise _Fail("SEARCH is empty but the file is not; give the lines to replace")
        return replace
    # 1. exact. A match that starts inside a line is only taken for a one-line fragment ("0.003" ->
    # "0.004"); a line-shaped SEARCH found mid-line would leave the REPLACE wrongly indented.
    fragment = "\n" not in search and "\n" not in replace
    spots = [s for s in _find_all(text, search) if fragment or s == 0 or text[s - 1] == "\n"]
    if len(spots) > 1:
        # "LR = 1" also occurs inside "MIN_LR = 1": prefer whole lines, then whole words.
        spots = (
            [s for s in spots if _whole_lines(text, s, len(search))]
            or [s for s in spots if _whole_words(text, s, len(search))]
            or spots
        )
    if len(spots) == 1:
        s = spots[0]
        return text[:s] + replace + text[s + len(search) :]
    if len(spots) > 1:
        raise _Fail(f"SEARCH text matches {len(spots)} places; include more lines to make it unique")
    # 2. line by line, trailing whitespace ignored; 3. indentation ignored too (replacement re-indented)
    lines = text.splitlines(keepends=True)
    s_lines, lead, trail = _trim_blank(search.splitlines())
    r_lines = _trim_like(replace.splitlines(), lead, trail)
    for level in (_match_rstrip, _match_indent):
        found = [k for k in range(len(lines) - len(s_lines) + 1) if level(lines[k : k + len(s_lines)], s_lines)]
        if len(found) > 1:
            where = ", ".join(str(k + 1) for k in found[:5])
            raise _Fail(f"SEARCH text matches {len(found)} places (lines {where}); include more lines")
        if found:
            k = found[0]
            window = lines[k : k + len(s_lines)]
            new = r_lines if level is _match_rstrip else _reindent(window, s_lines, r_lines)
            return "".join(lines[:k]) + _join(new, window) + "".join(lines[k + len(s_lines) :])
    raise _Fail("SEARCH text not found" + _closest(lines, s_lines))


def _find_all(text: str, sub: str) -> list[int]:
    out, start = [], 0
    while (k := text.find(sub, start)) != -1:
        out.append(k)
        start = k + 1
    return out


def _whole_lines(text: str, start: int, length: int) -> bool:
    end = start + length
    starts_line = start == 0 or text[start - 1] == "\n"
    ends_line = text[end - 1] == "\n" or end == len(text) or text[end] in "\r\n"
    return starts_line and ends_line


def _whole_words(text: str, start: int, length: int) -> bool:
    def word(c: str) -> bool:
        return c.isalnum() or c == "_"

    end = start + length
    left = start == 0 or not (word(text[start - 1]) and word(text[start]))
    right = end == len(text) or not (word(text[end - 1]) and word(text[end]))
    return left and right


def _trim_blank(lines: list[str]) -> tuple[list[str], int, int]:
    """Drop blank lines around a SEARCH block (models add them); say how many on each side."""
    lead = 0
    while lead < len(lines) and not lines[lead].strip():
        lead += 1
    end = len(lines)
    while end > lead and not lines[end - 1].strip():
        end -= 1
    return lines[lead:end], lead, len(lines) - end


def _trim_like(lines: list[str], lead: int, trail: int) -> list[str]:
    """Drop as many blank lines around REPLACE as were dropped around SEARCH."""
    a = 0
    while a < lead and a < len(lines) and not lines[a].strip():
        a += 1
    b = len(lines)
    while len(lines) - b < trail and b > a and not lines[b - 1].strip():
        b -= 1
    return lines[a:b]


def _match_rstrip(window: list[str], s_lines: list[str]) -> bool:
    return all(t.rstrip() == s.rstrip() for t, s in zip(window, s_lines, strict=False))


def _indent(lines: Iterable[str]) -> str:
    """The whitespace every non-blank line starts with."""
    ws = [line[: len(line) - len(line.lstrip())] for line in lines if line.strip()]
    return commonprefix(ws) if ws else ""


def _match_indent(window: list[str], s_lines: list[str]) -> bool:
    wi, si = _indent(window), _indent(s_lines)
    for t, s in zip(window, s_lines, strict=False):
        if not t.strip() or not s.strip():
            if t.strip() or s.strip():
                return False
            continue
        if t[len(wi) :].rstrip() != s[len(si) :].rstrip():
            return False
    return True


def _reindent(window: list[str], s_lines: list[str], r_lines: list[str]) -> list[str]:
    wi, si = _indent(window), _indent(s_lines)
    out = []
    for r in r_lines:
        if not r.strip():
            out.append("")
        elif r.startswith(si):
            out.append(wi + r[len(si) :])
        else:
            raise _Fail("REPLACE is indented less than SEARCH, so it cannot be re-indented to fit the file")
    return out


def _join(new: list[str], window: list[str]) -> str:
    """Join replacement lines with the window's line ending; end with one if the window did."""
    if not new:
        return ""
    eol = "\r\n" if window and window[0].endswith("\r\n") else "\n"
    ends = bool(window) and window[-1].endswith(("\n", "\r"))
    return eol.join(new) + (eol if ends else "")


def _closest(lines: list[str], s_lines: list[str]) -> str:
    first = next((s.strip() for s in s_lines if s.strip()), "")
    stripped = [line.strip() for line in lines]
    best = difflib.get_close_matches(first, stripped, n=1, cutoff=0.6)
    if not best:
        return ""
    return f" (closest line {stripped.index(best[0]) + 1}: {best[0]!r})"


# --------------------------------------------------------------------------------------------------
# parsing

_HEAD = re.compile(r"^\s*<{5,9} ?SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_TAIL = re.compile(r"^\s*>{5,9} ?REPLACE\s*$")


def parse_search_replace(text: str) -> list[FileEdit]:
    """Parse aider-style blocks: a file name line, then <<<<<<< SEARCH / ======= / >>>>>>> REPLACE.
    Code fences around a block are allowed; a block with no file name reuses the previous block's."""
    lines = text.splitlines()
    edits: list[FileEdit] = []
    last_path: str | None = None
    i = 0
    while i < len(lines):
        if not _HEAD.match(lines[i]):
            i += 1
            continue
        n = len(edits) + 1
        path = _path_before(lines, i) or last_path
        if not path:
            raise EditError(f"block {n}: no file name before <<<<<<< SEARCH", index=n)
        j = i + 1
        while j < len(lines) and not _DIVIDER.match(lines[j]):
            if _HEAD.match(lines[j]) or _TAIL.match(lines[j]):
                break
            j += 1
        if j >= len(lines) or not _DIVIDER.match(lines[j]):
            raise EditError(f"block {n} ({path}): no ======= line after <<<<<<< SEARCH", index=n, path=path)
        k = j + 1
        while k < len(lines) and not _TAIL.match(lines[k]):
            if _HEAD.match(lines[k]):
                break
            k += 1
        if k >= len(lines) or not _TAIL.match(lines[k]):
            raise EditError(f"block {n} ({path}): no >>>>>>> REPLACE line", index=n, path=path)
        edits.append(FileEdit(path=path, search=_block(lines[i + 1 : j]), replace=_block(lines[j + 1 : k])))
        last_path = path
        i = k + 1
    return edits


def _block(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _path_before(lines: list[str], i: int) -> str | None:
    """The file name on the nearest line above a block, skipping blank lines and code fences."""
    for j in range(i - 1, -1, -1):
        line = lines[j].strip()
        if not line or line.startswith("```"):
            continue
        if _TAIL.match(line):
            return None  # directly after another block: same file as that one
        name = line.strip("`*:#").strip()
        if name and " " not in name and ("." in name or "/" in name):
            return _norm(name)
        return None
    return None
