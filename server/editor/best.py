"""The best result as a whole: the kept chain under an experiment, the file where the loop started, and
the three-way merge of the best commit's files into the user's buffers ("Apply best").

An experiment's commit holds every kept change under it: "#7" as trained is #4 and #5 and #7. Its own
change (parent -> commit) is only the last of them. `chain` names the kept experiments between the
lineage's origin (the user's commit the loop started from) and the experiment; `describe` says so in
words; `plan_best` merges origin -> best into the buffer per hunk (changes/merge.py), keeping the
user's own edits and leaving out, with their line, the hunks that meet them.

Must not import: pygls, lsprotocol (lsp/ turns these into edits and messages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nightlab.server.changes import merge as mg
from nightlab.server.core.types import Experiment, ExperimentStatus
from nightlab.server.editor.session import Session, SessionError
from nightlab.server.loop.lineage import STATE_FILE, read_state
from nightlab.server.record.store import StoreError


def origin(session: Session) -> str:
    """The commit the current lineage started from: lineage.json's origin, else the parent of the
    lineage's first experiment (the baseline), else ""."""
    state = read_state(session.root / ".nightlab" / session.settings().tag / STATE_FILE)
    current = session.ledger().current()
    if state is not None and state.lineage == session.ledger().current_lineage():
        return state.origin
    return next((e.parent_commit for e in current if e.parent_commit), "")


def chain(session: Session, exp: Experiment) -> list[Experiment]:
    """The kept experiments (not the baseline) whose changes `exp`'s commit holds under its own,
    oldest first, found by following parent commits through the ledger."""
    by_commit = {
        e.commit: e
        for e in session.experiments()
        if e.commit and e.status == ExperimentStatus.KEEP and e.lineage == exp.lineage
    }
    out, seen, at = [], {exp.commit}, by_commit.get(exp.parent_commit)
    while at is not None and at.commit not in seen:  # a cycle cannot happen in git; a forged ledger may
        seen.add(at.commit)
        if not at.is_baseline:
            out.append(at)
        at = by_commit.get(at.parent_commit)
    return list(reversed(out))


def _numbers(exps: list[Experiment]) -> str:
    names = [f"#{e.number}" for e in exps]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe(session: Session, exp: Experiment) -> str:
    """What applying `exp`'s own change brings: '' when its parent is the origin (its change is all
    that was trained), else "#7's change alone; #7 was trained on top of #4 and #5"."""
    under = chain(session, exp)
    if not under:
        return ""
    return f"#{exp.number}'s change alone; #{exp.number} was trained on top of {_numbers(under)}"


@dataclass
class FileMerge:
    path: str
    base: str  # the file at the origin
    theirs: str  # at the best commit
    merge: mg.Merge


@dataclass
class BestPlan:
    """Apply best, worked out against the buffers: one FileMerge per editable file the best changes."""

    best: Experiment
    kept: list[Experiment]  # the kept changes the best holds, oldest first, the best last
    files: list[FileMerge] = field(default_factory=list)

    @property
    def title(self) -> str:
        k = len(self.kept)
        return f"Apply best: #{self.best.number} ({k} kept change{'s' if k != 1 else ''})"

    def conflicts(self) -> str:
        """Each conflicting hunk, with the buffer line it meets; '' when none does."""
        return "; ".join(t for f in self.files if (t := mg.conflict_text(f.path, f.merge)))


def _texts(store, rel: str, commit: str, base_commit: str) -> tuple[str, str | None]:
    """(the file at the origin, at the best commit); None for the best's when it is not there."""
    try:
        theirs = store.read_file(rel, commit)
    except StoreError:
        return "", None  # not in the best commit: nothing of it to take
    try:
        base = store.read_file(rel, base_commit) if base_commit else ""
    except StoreError:
        base = ""  # the loop created it
    return base, theirs


def best_experiment(session: Session) -> Experiment:
    s = session.settings()
    best = session.ledger().best(s.metric.direction)
    if best is None or not best.commit:
        raise SessionError(f"there is no best experiment on tag {s.tag} yet: the loop has kept nothing")
    return best


def plan_best(session: Session, buffer_text, path: str | None = None) -> BestPlan | None:
    """The best commit's editable files merged three-way into the buffers (`buffer_text(rel)` gives
    the open buffer or the file on disk); None when the best is only the baseline (no change to
    take). `path` keeps one file."""
    best = best_experiment(session)
    if best.is_baseline:
        return None
    base_commit = origin(session)
    plan = BestPlan(best, [*chain(session, best), best])
    texts = session.__dict__.setdefault("_best_texts", {})  # commits never change: read each file once
    for rel in session.settings().files.editable:
        if path is not None and rel != path:
            continue
        key = (rel, best.commit, base_commit)
        if key not in texts:
            texts[key] = _texts(session.store(), rel, best.commit, base_commit)
        base, theirs = texts[key]
        if theirs is not None and base != theirs:
            plan.files.append(FileMerge(rel, base, theirs, mg.merge(base, theirs, buffer_text(rel))))
    return plan
