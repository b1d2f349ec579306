"""The ledger of one loop: `.nightlab/<tag>/experiments.jsonl` and autoresearch's `results.tsv`.

experiments.jsonl is append-only: one JSON object per line, each append flushed and fsync'ed. An
experiment's number appears again each time its state moves on ('running', then 'keep'); readers take
the last record per number. A line torn by a kill -9 (or a full disk) is skipped, and the next append
starts on a fresh line; an append that fails (ENOSPC) takes its partial line back out.

**Only the loop's records count.** Every record written through this class is sealed (seal.py: an
HMAC-SHA256 with the ledger's key, `.nightlab/<tag>/ledger.key`, and a sequence number); audit.py
decides which lines count. A record the loop did not write (no seal or a wrong one, a copy of another,
a second verdict, a number from the future, a torn line) is reported once, in words, through
`on_problem` and ignored: never the best, never moves the numbering, never stops the loop. Records from
before the key existed are legacy and trusted as before.
The loop's own Ledger is `open()`ed: it holds the key in memory for the session (a key file deleted or
replaced behind its back is put back; a start whose key does not match the sealed history is refused),
and it runs the **live check**: it knows the file's size and hash after its own last append, and before
each append anything that appeared behind its back is reported and voided by a sealed `void` record
(so it stays ignored even when training, with the sandbox off, read the key and sealed it). The
person's review (the editor's own append, a sealed record that only adds a review) is let through.
What does not hold with the sandbox off: a forgery sealed with the leaked key, followed by the loop's
death before its next check, reads as the loop's on the next start. Run training under the sandbox.

results.tsv is autoresearch's exact format, one row per final experiment (keep | discard | crash),
appended when it becomes final, in that order. `interrupted` experiments get no row. The jsonl record is
written first; `repair()` restores results.tsv from the sealed jsonl (a row a crash lost or doubled, or
one training wrote).

**Invariant:** a jsonl record is never rewritten in place.

Must not import: git, torch, the store, runner, agents or engine.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nightlab.server.core.types import Experiment, ExperimentStatus
from nightlab.server.record import audit, seal, watch
from nightlab.server.record.audit import FINAL, Line
from nightlab.server.record.durable import append_line, append_lock, fsync_dir
from nightlab.server.record.seal import Key

log = logging.getLogger(__name__)

ENDED = (*FINAL, ExperimentStatus.INTERRUPTED)
FIRST_NUMBER = 1  # experiment 1 is the baseline
_UNSET = object()


class LedgerError(Exception):
    pass


def tsv_header(metric_name: str = "val_bpb") -> str:
    return f"commit\t{metric_name}\tmemory_gb\tstatus\tdescription\n"


def tsv_row(exp: Experiment) -> str:
    """autoresearch's row: 7-char commit, %.6f metric and %.1f GB (zeros for a crash), one-line text."""
    crashed = exp.status == ExperimentStatus.CRASH or exp.metric is None or not math.isfinite(exp.metric)
    metric = 0.0 if crashed else float(exp.metric)
    memory = 0.0 if exp.status == ExperimentStatus.CRASH else float(exp.memory_gb or 0.0)
    text = " ".join(exp.description.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())
    commit = (exp.commit or "0" * 7)[:7]
    return f"{commit}\t{metric:.6f}\t{memory:.1f}\t{exp.status}\t{text}\n"


class Ledger:
    def __init__(self, dir: Path, metric_name: str = "val_bpb"):
        self.dir = Path(dir)
        self.jsonl = self.dir / "experiments.jsonl"
        self.tsv = self.dir / "results.tsv"
        self.metric_name = metric_name
        self.on_problem: Callable[[str], None] = lambda text: log.warning("%s", text)  # a person reads it
        # Parsed lines and how far into the file they go: the file only grows, so a later read parses
        # just the new tail (editors ask on every hover; a night's ledger is megabytes).
        self._cache_key: tuple[int, int] | None = None  # (device, inode)
        self._cache_offset = 0
        self._lines: list[Line] = []
        self._trusted: list[Experiment] = []
        self._trusted_key: tuple | None = None
        self._reported: set[int] = set()  # offsets of the rejected lines already reported
        self._key: Key | None = None
        self._verified_with: Any = _UNSET  # the key the cached lines' seals were checked with
        self._lineno = 1  # the line number of the first line not yet parsed
        self._torn_seen = -1  # the torn last line already warned about
        self._key_seen: tuple | None = None  # the key file's stat when read (readers reload a new key)
        self._pinned = False  # open(): the loop's ledger, its key held in memory for the session
        self.watch: watch.Watch | None = None  # the live check, on the loop's own ledger (open())
        self._latest: list[Experiment] = []
        self._latest_key: tuple | None = None
        self.lineage: int | None = None  # the loop's current lineage (loop/lineage.py); None: the latest recorded

    # ---------------------------------------------------------------------------------------------
    # reading

    def records(self) -> list[Experiment]:
        """Every record that counts, in file order (several per experiment). Copies: a caller may change
        what it gets without changing the ledger's cache."""
        return [copy.copy(r) for r in self._records()]

    def _records(self) -> list[Experiment]:
        lines, tail = self._read()
        key = self._current_key()
        if key is not self._verified_with:  # a key made or read again: every line is checked with it
            for line in lines:
                line.seq = seal.verify(key, line.rec) if line.rec is not None else None
            self._verified_with = key
        if tail is not None:
            tail.seq = seal.verify(key, tail.rec) if tail.rec is not None else None
        state = (self._cache_key, self._cache_offset, id(key), tail.end if tail else None)
        if state == self._trusted_key:
            return self._trusted
        trusted, rejected = audit.audit(lines + ([tail] if tail else []), key)
        self._trusted, self._trusted_key = trusted, state
        for r in rejected:
            if r.line is not tail and r.line.offset not in self._reported:
                self._reported.add(r.line.offset)
                self.on_problem(audit.message(self.jsonl.name, r))
        return trusted

    def _read(self) -> tuple[list[Line], Line | None]:
        """The file's complete lines (the new ones parsed), and a complete record at its end without
        its newline (it may still be being written: read it, but parse it again once it is finished)."""
        try:
            st = os.stat(self.jsonl)
        except FileNotFoundError:
            st = None
        ident = (st.st_dev, st.st_ino) if st else None
        if st is None or ident != self._cache_key or st.st_size < self._cache_offset:  # a new or rewritten file
            self._cache_key, self._cache_offset, self._lines, self._lineno = ident, 0, [], 1
            self._verified_with, self._trusted_key = _UNSET, None
        if st is None or st.st_size == self._cache_offset:
            return self._lines, None
        with open(self.jsonl, "rb") as f:
            f.seek(self._cache_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        new = audit.parse(data[:end], self._cache_offset, self._lineno)
        key = self._verified_with if isinstance(self._verified_with, Key) else None
        for line in new:
            line.seq = seal.verify(key, line.rec) if line.rec is not None else None
        self._lines.extend(new)
        self._lineno += data[:end].count(b"\n")
        tail = None
        if data[end:].strip():
            tail = audit.read_line(data[end:], self._cache_offset + end, self._cache_offset + len(data), self._lineno)
            if tail.rec is None:  # torn (a kill -9), or half written: judged once its line is finished
                if tail.offset != self._torn_seen:
                    self._torn_seen = tail.offset
                    log.warning("%s: the last line is torn (skipped for now)", self.jsonl)
                tail = None
        self._cache_offset += end
        return self._lines, tail

    def _current_key(self) -> Key | None:
        """The key to verify with: the loop's own, held for the session; a reader's, read again when the
        file changes (the loop may make it after an editor opened the ledger)."""
        if self._pinned:
            return self._key
        try:
            st = os.stat(self.dir / seal.KEY_NAME)
            seen: tuple | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            seen = None
        if seen != self._key_seen:
            self._key_seen = seen
            try:
                self._key = seal.read_key(self.dir) if seen else None
            except seal.KeyUnreadable as exc:
                self.on_problem(f"{exc}: sealed records cannot be checked, so none of them counts")
                self._key = None
        return self._key

    def experiments(self) -> list[Experiment]:
        """The latest state of every experiment, sorted by number. The records are shared with the
        ledger's cache: read them, or change a copy (`get()` returns one); never change them in place."""
        records = self._records()
        key = (self._cache_key, self._cache_offset, len(records))
        if key != self._latest_key:
            latest: dict[int, Experiment] = {}
            for rec in records:
                latest[rec.number] = rec
            self._latest, self._latest_key = [latest[n] for n in sorted(latest)], key
        return list(self._latest)

    def get(self, number: int) -> Experiment | None:
        found = None
        for rec in self._records():
            if rec.number == number:
                found = rec
        return copy.copy(found) if found is not None else None

    def next_number(self) -> int:
        """One more than any number ever recorded (interrupted ones included: numbers are never reused)."""
        numbers = [r.number for r in self._records()]
        return max(numbers) + 1 if numbers else FIRST_NUMBER

    def unfinished(self) -> list[Experiment]:
        """Experiments whose latest record is not an ended state: left running by a crash of the engine."""
        return [e for e in self.experiments() if e.status not in ENDED]

    def current_lineage(self) -> int:
        return self.lineage if self.lineage is not None else max((r.lineage for r in self._records()), default=1)

    def current(self) -> list[Experiment]:
        """The experiments of the current lineage (the user's code it started from): what the best,
        the baseline and the noise floor count. Earlier lineages stay in experiments()."""
        lineage = self.current_lineage()
        return [e for e in self.experiments() if e.lineage == lineage]

    def best(self, direction: str = "lower") -> Experiment | None:
        """The best kept experiment of the current lineage with a finite metric, or None before its
        baseline is kept."""
        if direction not in ("lower", "higher"):
            raise ValueError(f"direction must be lower or higher, got {direction!r}")
        kept = [
            e
            for e in self.current()
            if e.status == ExperimentStatus.KEEP and e.metric is not None and math.isfinite(e.metric)
        ]
        if not kept:
            return None
        pick = min if direction == "lower" else max
        return pick(kept, key=lambda e: e.metric)

    def cost_usd(self) -> float:
        """What the agent has cost on this tag, over every experiment."""
        return sum(float(e.usage.get("cost_usd") or 0.0) for e in self.experiments())

    def tsv_rows(self) -> list[str]:
        """The data rows of results.tsv as complete lines (a torn last line is left out)."""
        if not self.tsv.exists():
            return []
        text = self.tsv.read_text(encoding="utf-8")
        lines = text.split("\n")
        # A file not ending in "\n" ends in a torn row; its complete lines are the ones before it.
        complete = lines[:-1]
        if complete and complete[0].startswith("commit\t"):
            complete = complete[1:]
        return [line + "\n" for line in complete if line]

    # ---------------------------------------------------------------------------------------------
    # writing

    def open(self) -> None:
        """The loop's start: hold the key for the session (made now for a ledger that has none), refuse a
        key that does not match the sealed history, and begin the live check (watch.py)."""
        try:
            key = seal.read_key(self.dir)
        except seal.KeyUnreadable as exc:
            raise LedgerError(f"{exc}: put it back from a backup, or move experiments.jsonl aside") from None
        self._pinned, self._key = True, key
        lines, _ = self._read()
        for line in lines:
            line.seq = seal.verify(key, line.rec) if line.rec is not None else None
        self._verified_with = key
        problem = watch.key_problem(key, lines, self.dir)
        if problem:
            self._pinned = False
            raise LedgerError(problem)
        self.dir.mkdir(parents=True, exist_ok=True)
        with append_lock(self.dir):
            self._key = self._writing_key()
        self.watch = watch.Watch(self, self._key)

    def append(self, exp: Experiment) -> None:
        """Append one record (any state) to experiments.jsonl, sealed, durably; on the loop's ledger the
        live check runs first."""
        with self._checked():
            self._append(exp)

    @contextmanager
    def _checked(self) -> Iterator[None]:
        """The append lock, and the live check (on the loop's ledger) before anything is read for a write."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with append_lock(self.dir):
            if self.watch is not None:
                try:
                    self.watch.check()
                except watch.WatchError as exc:
                    raise LedgerError(str(exc)) from None
            yield

    def _append(self, exp: Experiment) -> None:
        self.write_sealed(exp.to_json())
        if self.watch is not None:
            self.watch.mark()

    def write_sealed(self, rec: dict[str, Any]) -> None:
        """Seal and append one record (the caller holds the append lock)."""
        key = self._writing_key()
        self._records()
        lines, tail = self._read()
        seq = 1 + max((line.seq or 0 for line in [*lines, *([tail] if tail else [])]), default=0)
        line = json.dumps(seal.sealed(key, seq, rec), ensure_ascii=False, separators=(",", ":"))
        append_line(self.jsonl, line + "\n")

    def _writing_key(self) -> Key:
        key = self._current_key()
        if key is not None:
            return key
        if any(line.rec is not None and seal.has_seal(line.rec) for line in self._read()[0]):
            raise LedgerError(watch.key_problem(None, self._read()[0], self.dir))
        key = seal.new_key(self.jsonl.stat().st_size if self.jsonl.exists() else 0)
        if not seal.write_key(self.dir, key):  # another writer made one first: use theirs
            key = seal.read_key(self.dir) or key
        self._key_seen = None  # a reader reads it again, from the file
        if self._pinned:
            self._key = key
        return key

    def lines(self) -> list[Line]:
        """The file's complete lines as parsed, before any judgement (the live check reads them)."""
        return list(self._read()[0])

    def note_reported(self, offsets: Iterable[int]) -> None:
        self._reported.update(offsets)

    def finalize(self, exp: Experiment) -> None:
        """Record an experiment's final state: the jsonl record, then (unless interrupted) its tsv row.
        The same verdict again (a retry after a full disk) only makes sure the row is there."""
        if exp.status not in ENDED:
            raise LedgerError(f"experiment {exp.number}: {exp.status!r} is not a final state ({', '.join(ENDED)})")
        with self._checked():
            before = self.get(exp.number)
            if before is not None and before.status in FINAL:
                if not audit.same_verdict(before, exp):
                    raise LedgerError(f"experiment {exp.number} is already final ({before.status})")
            else:
                self._append(exp)
        if exp.status in FINAL:
            self.repair()

    def expected_rows(self) -> list[str]:
        """results.tsv's rows as the jsonl says they should be: one per final experiment, in the order
        the experiments became final."""
        order: list[int] = []
        final: dict[int, Experiment] = {}
        for rec in self.records():
            if rec.status in FINAL:
                if rec.number not in final:
                    order.append(rec.number)
                final[rec.number] = rec
        return [tsv_row(final[n]) for n in order]

    def repair(self) -> int:
        """Make results.tsv agree with experiments.jsonl after a crash between their two writes.
        Missing rows at the end are appended; any other disagreement (a doubled or torn row) rewrites the
        file atomically. Returns the number of rows written (0 when it already agreed)."""
        want = self.expected_rows()
        have = self.tsv_rows()
        text = self.tsv.read_text(encoding="utf-8") if self.tsv.exists() else ""
        torn = bool(text) and not text.endswith("\n")
        if have == want and not torn:
            return 0
        if not torn and have == want[: len(have)]:
            for row in want[len(have) :]:
                append_line(self.tsv, row, header=tsv_header(self.metric_name))
            return len(want) - len(have)
        if set(have) - set(want):  # rows the ledger does not have: someone else wrote them
            self.on_problem(f"{self.tsv.name} has rows the loop did not write: rewritten from {self.jsonl.name}")
        else:
            log.warning("%s disagrees with %s; rewriting it from the ledger", self.tsv, self.jsonl)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tsv.with_suffix(".tsv.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(tsv_header(self.metric_name) + "".join(want))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.tsv)
        finally:
            tmp.unlink(missing_ok=True)  # a full disk: no half-written copy left behind
        fsync_dir(self.dir)
        return len(want)
