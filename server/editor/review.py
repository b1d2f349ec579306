"""Review truth: what the person said about an experiment (its review, a ledger record) set beside what
their files hold now (`in_file`, computed from the files and the open buffers, never stored), and what
accepting it brings into a buffer.

- `InFileIndex.states`: for each experiment with a commit (not a baseline), how many of the hunks of its
  change to the editable files the buffers hold, by changes/hunks.py's planner ("applied"): all of them
  "all", some "some", none "none"; None where nothing is computed (no commit, a baseline, no change to
  an editable file, a commit that cannot be read). Cheap at 1,000 experiments: a commit's texts are read
  once and its hunks parsed once (commits never change); a hunk whose new lines are not all in the buffer
  (whitespace aside) cannot be applied there, so only the others are located, by the planner's own rule
  for "applied" (tests/test_review_truth.py holds the two together), on the buffer split once a round;
  the answers are kept per buffer, by its hash, for the last few buffers of each file. Measured at 1,000
  experiments of a 630-line train.py: 10-190 ms for a new buffer, 3 ms for one seen before; the first
  look reads each commit from git and parses its diff (about 9 ms an experiment, once a session).
- `accept_file`: one file of an experiment's change planned for Accept: its hunks located in the buffer,
  else merged three-way against its parent, else as trained (its kept chain with it, said so). What
  still meets the user's own edits is left out and named ("train.py: lines 40-44 (hunk 2)"), never
  forced; the client opens the diff for it.

Must not import: pygls, lsprotocol.
"""

from __future__ import annotations

import functools
import hashlib
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nightlab.protocol.types import InFile
from nightlab.server.changes import hunks as hk
from nightlab.server.changes import merge as mg
from nightlab.server.core.types import Experiment
from nightlab.server.editor import best as bst
from nightlab.server.editor.session import Session, SessionError
from nightlab.server.record.store import StoreError

Read = Callable[[str, str], "str | None"]  # (workspace path, commit) -> the text, None when it is not there


def _ws(line: str) -> str:
    return "".join(line.split())  # as hunks.py compares whitespace-insensitively (`git diff -w`)


# --------------------------------------------------------------------------------------------------
# in file


@dataclass(frozen=True)
class _Change:
    """One experiment's change to one file, parsed once."""

    parent: str
    new: str
    hunks: tuple[hk.Hunk, ...]
    # per hunk: its new lines without whitespace, which the buffer must all hold for the hunk to be
    # applied there; None for a pure deletion (no new lines: only locating it can tell)
    needles: tuple[frozenset[str] | None, ...]


class _Reads:
    """One round's reads, through one reader (one Store) opened at the first of them."""

    def __init__(self, opener: Callable[[], Read]):
        self._opener = opener
        self._read: Read | None = None

    def __call__(self, rel: str, commit: str) -> str | None:
        if self._read is None:
            self._read = self._opener()
        return self._read(rel, commit)


@dataclass(frozen=True)
class _Lines:
    """A buffer's lines as hunks.py works with them, split once for every change of a round."""

    split: list[tuple[str, str]]  # (content, line ending)
    contents: list[str]
    keys: frozenset[str]  # each line without whitespace
    starts: list[int]  # each line's offset, then the text's length
    eol: str  # the buffer's first line ending, "" when it has none

    @classmethod
    def of(cls, text: str) -> _Lines:
        split, starts = hk.split_lines(text), [0]
        for c, e in split:
            starts.append(starts[-1] + len(c) + len(e))
        contents = [c for c, _ in split]
        return cls(split, contents, frozenset(map(_ws, contents)), starts, next((e for _, e in split if e), ""))


class _Buffer:
    """One buffer of a file in one round: its text, the answers kept for it, and its lines (split only
    when a change is not answered yet)."""

    def __init__(self, text: str, answers: dict[tuple[str, str], int]):
        self.text, self.answers = text, answers

    @functools.cached_property
    def lines(self) -> _Lines:
        return _Lines.of(self.text)

    def holds(self, change: _Change, h: hk.Hunk) -> bool | None:
        """Whether `hunks.plan` would call the hunk "applied" here, by its own rule: located as applied,
        or located as found with an edit that changes nothing (a final newline). None where it would
        re-indent the edit first (a whitespace-insensitive match): only the planner can tell."""
        lines = self.lines
        loc = hk.locate(h, lines.contents)
        if loc is None or loc.state == "applied":
            return loc is not None
        if loc.indent != ("", ""):
            return None
        eol = lines.eol or next((e for _, e in hk.split_lines(change.new + change.parent) if e), "\n")
        (l1, c1, l2, c2), text = hk.line_edit(lines.split, loc.start, loc.end, h, eol)
        return self.text[lines.starts[l1] + c1 : lines.starts[l2] + c2] == text


class InFileIndex:
    """The in-file states of one workspace's experiments, and what they are computed from, cached.
    `opener()` gives a reader for one round of reads. Safe to use from a worker thread beside the event
    loop's: each entry is a function of its key alone, so a race costs a second read, never a wrong
    answer. A text that cannot be read counts as not there, for as long as the index lives."""

    def __init__(self, opener: Callable[[], Read], keep_buffers: int = 8):
        self._opener = opener
        self._texts: dict[tuple[str, str], str | None] = {}
        self._changes: dict[tuple[str, str, str], _Change | None] = {}
        # path -> buffer hash -> (parent commit, commit) -> hunks applied; the oldest buffer goes first
        self._answers: dict[str, OrderedDict[bytes, dict[tuple[str, str], int]]] = {}
        self.keep_buffers = keep_buffers
        self.reads = 0  # texts read so far (each (path, commit) once)
        self.plans = 0  # planner runs so far

    def _text(self, read: _Reads, rel: str, commit: str) -> str | None:
        key = (rel, commit)
        if key not in self._texts:
            self.reads += 1
            self._texts[key] = read(rel, commit)
        return self._texts[key]

    def _pair(self, read: _Reads, rel: str, parent_commit: str, commit: str) -> tuple[str, str | None]:
        """`rel` at the parent ("" where it is not there) and at the commit (None where it is not there)."""
        new = self._text(read, rel, commit)
        return (self._text(read, rel, parent_commit) if parent_commit and new is not None else None) or "", new

    def texts(self, exps: Iterable[Experiment], rel: str) -> list[tuple[Experiment, str, str]]:
        """(experiment, `rel` at its parent, at its commit) for each experiment with a commit that has
        `rel`: the texts annotate.py works from, from the same cache."""
        read, out = _Reads(self._opener), []
        for e in exps:
            parent, new = self._pair(read, rel, e.parent_commit, e.commit) if e.commit else ("", None)
            if new is not None:
                out.append((e, parent, new))
        return out

    def _change(self, read: _Reads, rel: str, parent_commit: str, commit: str) -> _Change | None:
        key = (rel, parent_commit, commit)
        if key not in self._changes:
            parent, new = self._pair(read, rel, parent_commit, commit)
            hunks = hk.parse_hunks(parent, new) if new is not None and parent != new else []
            needles = tuple(frozenset(map(_ws, h.new_lines)) if h.new_lines else None for h in hunks)
            self._changes[key] = _Change(parent, new, tuple(hunks), needles) if new is not None and hunks else None
        return self._changes[key]

    def _buffer(self, rel: str, text: str) -> _Buffer:
        """This buffer of `rel`, with the answers kept for it (none for a buffer not seen lately)."""
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        kept = self._answers.setdefault(rel, OrderedDict())
        if digest in kept:
            kept.move_to_end(digest)
        else:
            kept[digest] = {}
            while len(kept) > self.keep_buffers:
                kept.popitem(last=False)
        return _Buffer(text, kept[digest])

    def _applied(self, change: _Change, buffer: _Buffer) -> int:
        """How many of the change's hunks the buffer holds ("applied" by hunks.plan's rule). A hunk with a
        new line the buffer lacks is not applied there, so only the others are located."""
        keys = buffer.lines.keys
        maybe = [h for h, n in zip(change.hunks, change.needles, strict=True) if n is None or n <= keys]
        if not maybe:
            return 0
        self.plans += 1
        held = [buffer.holds(change, h) for h in maybe]
        if None in held:  # the planner itself, for the rare re-indented match
            return sum(p.state == "applied" for p in hk.plan(change.parent, change.new, buffer.text))
        return sum(map(bool, held))

    def states(
        self, exps: Iterable[Experiment], editable: Iterable[str], buffer_text: Callable[[str], str]
    ) -> dict[int, InFile | None]:
        """Experiment number -> how much of its change the buffers hold (`buffer_text(path)`: the open
        buffer, else the file on disk; asked once per path)."""
        read, paths = _Reads(self._opener), list(editable)
        buffers: dict[str, _Buffer] = {}
        out: dict[int, InFile | None] = {}
        for e in exps:
            if not e.commit or e.is_baseline:
                out[e.number] = None
                continue
            applied = total = 0
            for rel in paths:
                change = self._change(read, rel, e.parent_commit, e.commit)
                if change is None:
                    continue
                if rel not in buffers:
                    buffers[rel] = self._buffer(rel, buffer_text(rel))
                answers, key = buffers[rel].answers, (e.parent_commit, e.commit)
                if key not in answers:
                    answers[key] = self._applied(change, buffers[rel])
                applied, total = applied + answers[key], total + len(change.needles)
            out[e.number] = None if not total else "all" if applied == total else "some" if applied else "none"
        return out


_INDEXES: weakref.WeakKeyDictionary[Session, InFileIndex] = weakref.WeakKeyDictionary()


def _reader(session: Session) -> Read:
    store = session.store()

    def read(rel: str, commit: str) -> str | None:
        try:
            return store.read_file(rel, commit)
        except StoreError:
            return None  # not in that commit (or the commit is gone)

    return read


def index(session: Session) -> InFileIndex:
    """The session's in-file index (one per session, for as long as the session lives)."""
    found = _INDEXES.get(session)
    if found is None:
        found = _INDEXES[session] = InFileIndex(lambda: _reader(session))
    return found


def in_file(
    session: Session, exps: Iterable[Experiment], buffer_text: Callable[[str], str]
) -> dict[int, InFile | None]:
    """Experiment number -> "all" | "some" | "none" | None (see the module docstring)."""
    return index(session).states(exps, session.settings().files.editable, buffer_text)


# --------------------------------------------------------------------------------------------------
# accept


@dataclass
class FileAccept:
    """Accept's plan for one file: the edits against one buffer version, what is there already, what
    is left out because it meets the user's own edits, and a note on what the edits are."""

    rel: str
    plans: list[hk.HunkPlan] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)  # the diff's hunk indices the buffer holds already
    conflicts: list[str] = field(default_factory=list)  # "train.py: lines 40-44 (hunk 2), your edit at line 41"
    note: str = ""


def _touches(p: hk.HunkPlan, h: hk.Hunk) -> bool:
    """Whether a merge's change (its lines in the experiment's file) falls in the hunk `h` of the diff."""
    j1, j2 = p.hunk.new_start, p.hunk.new_start + len(p.hunk.new_lines)
    h1, h2 = h.new_start, h.new_start + len(h.new_lines)
    if j1 == j2:
        return h1 <= j1 <= h2
    if h1 == h2:
        return j1 <= h1 <= j2
    return j1 < h2 and h1 < j2


def _within(plans: list[hk.HunkPlan], hunks: list[hk.Hunk], only: list[int] | None) -> list[hk.HunkPlan]:
    """The merge's plans for the diff hunks asked for (all when `only` is None)."""
    if only is None:
        return plans
    chosen = [h for h in hunks if h.index in only]
    return [p for p in plans if any(_touches(p, h) for h in chosen)]


def conflict_entries(rel: str, m: mg.Merge, plans: list[hk.HunkPlan], hunks: list[hk.Hunk] | None = None) -> list[str]:
    """'train.py: lines 40-44 (hunk 2), your edit at line 41' for each conflict among `plans` (of `m`):
    its lines in the experiment's file (what the diff shows), and the hunk of the diff it falls in (of
    `hunks`, else the merge's own numbering)."""
    out = []
    for p in plans:
        if p.state != "conflict":
            continue
        a, b = p.hunk.new_start + 1, p.hunk.new_start + len(p.hunk.new_lines)
        where = f"lines {a}-{b}" if b > a else f"line {a}"
        if hunks is None:
            which = f"hunk {p.hunk.index + 1}"
        else:
            found = next((h.index for h in hunks if _touches(p, h)), None)
            which = f"hunk {found + 1}" if found is not None else "a kept change under it"
        met = m.conflict_lines.get(p.hunk.index)
        out.append(f"{rel}: {where} ({which})" + (f", your edit at line {met + 1}" if met is not None else ""))
    return out


def _merged(rel: str, m: mg.Merge, hunks: list[hk.Hunk], only: list[int] | None, note: str) -> FileAccept:
    plans = _within(m.plans, hunks, only)
    return FileAccept(rel, [p for p in plans if p.state == "apply"], [], conflict_entries(rel, m, plans, hunks), note)


def _as_trained(
    s: Session, number: int, rel: str, new: str, buffer: str, hunks: list[hk.Hunk], only: list[int] | None
) -> FileAccept | None:
    """The experiment as trained (its commit against the lineage's origin: its kept chain with it) merged
    into the buffer; None when it was trained on the origin itself (nothing more to try)."""
    under = bst.chain(s, s.experiment(number))
    base_commit = bst.origin(s)
    if not under or not base_commit:
        return None
    try:
        base = s.store().read_file(rel, base_commit)
    except (StoreError, SessionError):
        base = ""  # the loop created the file
    names = ", ".join(f"#{e.number}" for e in under)
    note = f"{rel}: #{number} as trained, with the kept {names} under it"
    return _merged(rel, mg.merge(base, new, buffer), hunks, only, note)


def accept_file(
    s: Session, number: int, rel: str, parent: str, new: str, buffer: str, only: list[int] | None
) -> FileAccept:
    """One file of experiment `number`'s change (parent -> new), or its hunks `only`, planned into
    `buffer`. The hunks located first; when one no longer fits (the buffer lacks the kept changes the
    experiment was trained on top of, or the user edited next to it): merged three-way against its
    parent, then as trained. The first with nothing left out wins; else the one leaving out fewer
    hunks (the three-way merge on a tie), its conflicts named."""
    plans = [p for p in hk.plan(parent, new, buffer) if only is None or p.hunk.index in only]
    if not any(p.state == "conflict" for p in plans):
        apply = [p for p in plans if p.state == "apply"]
        return FileAccept(rel, apply, [p.hunk.index for p in plans if p.state == "applied"])
    hunks = hk.parse_hunks(parent, new)
    merged = _merged(rel, mg.merge(parent, new, buffer), hunks, only, f"{rel}: merged three-way with your file")
    if not merged.conflicts:
        return merged
    trained = _as_trained(s, number, rel, new, buffer, hunks, only)
    if trained is not None and len(trained.conflicts) < len(merged.conflicts):
        return trained
    merged.note = ""  # its own hunks, some left out: the conflicts say which
    return merged
