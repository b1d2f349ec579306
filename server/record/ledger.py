"""The ledger of one loop: `.nightlab/<tag>/experiments.jsonl` and autoresearch's `results.tsv`.

experiments.jsonl is append-only: one JSON object per line, each append flushed and fsync'ed. An
experiment's number appears again each time its state moves on ('running', then 'keep'); readers take
the last record per number. A line torn by a kill -9 is skipped with a warning, and the next append
starts on a fresh line.

results.tsv is autoresearch's exact format, one row per final experiment (keep | discard | crash),
appended when it becomes final, in that order. `interrupted` experiments get no row. The jsonl record is
written first; `repair()` restores any row a crash between the two writes lost (or doubled).

**Invariant:** a jsonl record is never rewritten in place.

Must not import: git, torch, the store, runner, agents or engine.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path

from nightlab.server.core.types import Experiment, ExperimentStatus

log = logging.getLogger(__name__)

FINAL = (ExperimentStatus.KEEP, ExperimentStatus.DISCARD, ExperimentStatus.CRASH)  # one results.tsv row each
ENDED = (*FINAL, ExperimentStatus.INTERRUPTED)
FIRST_NUMBER = 1  # experiment 1 is the baseline


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


def _fsync_dir(path: Path) -> None:
    # A new file's directory entry is only durable once the directory is synced too.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _append_line(path: Path, line: str, header: str = "") -> None:
    """Append one complete line durably. If the file ends in a torn line, start a new one first."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        prefix = b""
        if size == 0:
            prefix = header.encode("utf-8")
        else:
            with open(path, "rb") as r:
                r.seek(size - 1)
                if r.read(1) != b"\n":
                    prefix = b"\n"
        data = prefix + line.encode("utf-8")
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


class Ledger:
    def __init__(self, dir: Path, metric_name: str = "val_bpb"):
        self.dir = Path(dir)
        self.jsonl = self.dir / "experiments.jsonl"
        self.tsv = self.dir / "results.tsv"
        self.metric_name = metric_name
        # Parsed records and how far into the file they go: the file only grows, so a later read
        # parses just the new tail (editors ask on every hover; a night's ledger is megabytes).
        self._cache_key: tuple[int, int] | None = None  # (device, inode)
        self._cache_offset = 0
        self._cache: list[Experiment] = []
        self._latest: list[Experiment] = []
        self._latest_key: tuple | None = None
        self.lineage: int | None = None  # the loop's current lineage (loop/lineage.py); None: the latest recorded

    # ---------------------------------------------------------------------------------------------
    # reading

    def records(self) -> list[Experiment]:
        """Every record in file order (several per experiment). Torn or unreadable lines are skipped.
        Copies: a caller may change what it gets without changing the ledger's cache."""
        return [copy.copy(r) for r in self._records()]

    def _records(self) -> list[Experiment]:
        try:
            st = os.stat(self.jsonl)
        except FileNotFoundError:
            self._cache_key, self._cache_offset, self._cache = None, 0, []
            return []
        key = (st.st_dev, st.st_ino)
        if key != self._cache_key or st.st_size < self._cache_offset:  # a new or rewritten file
            self._cache_key, self._cache_offset, self._cache = key, 0, []
        if st.st_size == self._cache_offset:
            return self._cache
        with open(self.jsonl, "rb") as f:
            f.seek(self._cache_offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a last line without its newline may still be being written
        for raw in data[:end].split(b"\n"):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
                if not isinstance(rec, dict) or not isinstance(rec.get("number"), int):
                    raise ValueError("not an experiment record")
                self._cache.append(Experiment.from_json(rec))
            except (ValueError, UnicodeDecodeError, TypeError) as e:
                # The usual cause is a kill -9 mid-append: the tail of the line never reached the disk.
                log.warning("%s: a line skipped (torn or not a record): %s", self.jsonl, e)
        tail = data[end:]
        if tail.strip():
            try:  # a complete record without its newline (the file ends there): read it, but parse
                rec = json.loads(tail.decode("utf-8"))  # it again once its line is finished
                if isinstance(rec, dict) and isinstance(rec.get("number"), int):
                    self._cache_offset += end
                    return self._cache + [Experiment.from_json(rec)]
            except (ValueError, UnicodeDecodeError):
                log.warning("%s: the last line is torn (skipped)", self.jsonl)
        self._cache_offset += end
        return self._cache

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

    def append(self, exp: Experiment) -> None:
        """Append one record (any state) to experiments.jsonl, durably."""
        self.dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(exp.to_json(), ensure_ascii=False, separators=(",", ":"))
        _append_line(self.jsonl, line + "\n")

    def finalize(self, exp: Experiment) -> None:
        """Record an experiment's final state: the jsonl record, then (unless interrupted) its tsv row."""
        if exp.status not in ENDED:
            raise LedgerError(f"experiment {exp.number}: {exp.status!r} is not a final state ({', '.join(ENDED)})")
        before = self.get(exp.number)
        if before is not None and before.status in FINAL:
            raise LedgerError(f"experiment {exp.number} is already final ({before.status})")
        self.append(exp)
        if exp.status in FINAL:
            _append_line(self.tsv, tsv_row(exp), header=tsv_header(self.metric_name))

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
                _append_line(self.tsv, row, header=tsv_header(self.metric_name))
            return len(want) - len(have)
        log.warning("%s disagrees with %s; rewriting it from the ledger", self.tsv, self.jsonl)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.tsv.with_suffix(".tsv.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(tsv_header(self.metric_name) + "".join(want))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.tsv)
        _fsync_dir(self.dir)
        return len(want)
