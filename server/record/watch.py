"""The ledger's live check: the loop's own Ledger knows experiments.jsonl's size and hash after its own
last append (and the key file it holds in memory); before each append it looks again.

- The file only grew, by records the loop did not write: each is voided by a sealed `void` record naming
  its bytes (audit.py then ignores it even if it carries a valid seal made with a key training read
  with the sandbox off), and the person is told ("experiments.jsonl changed while #3 trained: 1 record
  the loop did not write, ignored (line 17: experiment 2, 'keep 0.001')"). A sealed record that only
  adds the person's review to a final experiment (the editor's own append) is let through.
- The loop's own bytes changed (a rewrite, a truncation): LedgerError, a stop with that said in words;
  nothing the loop recorded can be vouched for any more.
- The key file changed or vanished: the loop's key is put back (records sealed with it stay valid) and
  the person is told.
`key_problem` is the start's check: a key that does not match the sealed history refuses the start.

Must not import: git, torch, the store, runner, agents or engine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from nightlab.server.core.types import Experiment, ExperimentStatus
from nightlab.server.record import audit, seal
from nightlab.server.record.audit import FINAL, Line
from nightlab.server.record.seal import Key

if TYPE_CHECKING:
    from nightlab.server.record.ledger import Ledger

REVIEW_FIELDS = {"review", "review_note", "reviewed_at", seal.SEAL}


class WatchError(Exception):
    pass


def key_problem(key: Key | None, lines: list[Line], folder: Path) -> str:
    """Why the ledger's key cannot vouch for its sealed records ("" when it can)."""
    sealed = [line for line in lines if line.rec is not None and seal.has_seal(line.rec)]
    if not sealed:
        return ""
    where = folder / seal.KEY_NAME
    fix = (
        "put the key file back from a backup, or move experiments.jsonl aside and start again "
        "(git keeps every experiment's commit and verdict under refs/nightlab/)"
    )
    if key is None:
        return f"{where} is missing, but {len(sealed)} records of experiments.jsonl are sealed with it: {fix}"
    first = next((line for line in sealed if line.offset >= key.since), None)
    if any(line.offset < key.since for line in sealed) or (first is not None and first.seq is None):
        return f"{where} is not the key experiments.jsonl was sealed with (it was replaced): {fix}"
    return ""


class Watch:
    def __init__(self, ledger: Ledger, key: Key):
        self.ledger, self.key = ledger, key
        self.key_text = key.to_text()
        self.size, self.digest = 0, ""
        self.known: dict[int, Experiment] = {}  # the latest record per number, as the loop last saw them
        self.mark()

    def mark(self) -> None:
        """After the loop's own append: what the file is now."""
        data = _read(self.ledger.jsonl)
        self.size, self.digest = len(data), hashlib.sha256(data).hexdigest()
        self.known = {e.number: e for e in self.ledger.experiments()}  # shared, never changed: no copies

    def check(self) -> None:
        """Before the loop's next append. Raises WatchError when the loop's own records were changed."""
        self._check_key()
        data = _read(self.ledger.jsonl)
        if len(data) == self.size and hashlib.sha256(data).hexdigest() == self.digest:
            return
        when = self._when()
        if len(data) < self.size or hashlib.sha256(data[: self.size]).hexdigest() != self.digest:
            raise WatchError(
                f"{self.ledger.jsonl} was changed behind the loop's back {when}: the loop's own records "
                f"(its first {self.size} bytes) are not what it wrote, and it stops rather than trust them "
                '(only training with [run] sandbox = "off" can do this); compare the file with git\'s '
                "refs/nightlab/ (every experiment's commit and verdict), then start again"
            )
        foreign = [line for line in self.ledger.lines() if line.offset >= self.size]
        bad = [line for line in foreign if not self._a_review(line)]
        ranges = [[line.offset, line.end] for line in bad]
        done = max((line.end for line in foreign), default=self.size)
        if done < len(data):  # a last line without its newline: theirs too
            ranges.append([done, len(data)])
        if not ranges:
            return
        n = len(ranges)
        shown = "; ".join(f"line {line.lineno}: {audit.describe(line)}" for line in bad[:3])
        records = f"{n} record{'s' if n > 1 else ''}"
        text = f"{self.ledger.jsonl.name} changed {when}: {records} the loop did not write, ignored"
        self.ledger.write_sealed({"void": ranges, "reason": text})
        self.ledger.note_reported(line.offset for line in bad)
        self.ledger.on_problem(text + (f" ({shown})" if shown else ""))

    def _a_review(self, line: Line) -> bool:
        """A sealed record that only adds the person's review to a final experiment: the editor's."""
        if line.seq is None or line.exp is None or line.rec is None:
            return False
        before = self.known.get(line.exp.number)
        if before is None or before.status not in FINAL:
            return False
        strip = lambda d: {k: v for k, v in d.items() if k not in REVIEW_FIELDS}  # noqa: E731
        return strip(line.rec) == strip(before.to_json())

    def _when(self) -> str:
        running = [n for n, e in self.known.items() if e.status == ExperimentStatus.RUNNING]
        if not running:
            return "since the loop's last record"
        return "while " + ", ".join(f"#{n}" for n in sorted(running)) + " trained"

    def _check_key(self) -> None:
        folder = self.ledger.dir
        if seal.key_text(folder) == self.key_text:
            return
        seal.write_key(folder, self.key, exclusive=False)
        self.ledger.on_problem(
            f"{folder / seal.KEY_NAME} was changed or deleted behind the loop's back (by training, with "
            '[run] sandbox = "off"?): the loop\'s own key is put back, and records sealed with another are ignored'
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
