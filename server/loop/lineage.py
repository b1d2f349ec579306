"""The loop follows the user's code. A tag remembers the commit of the user's HEAD its lineage started
from (`.nightlab/<tag>/lineage.json`). When the user's HEAD has moved on since (new commits, accepted
experiments committed, a fixed baseline), a start begins a new lineage from it: the branch
nightlab/<tag> moves to the user's HEAD and a new baseline runs; the old kept chain stays at
refs/nightlab/<tag>/lineage-<k>, every experiment keeps its number and ref, and each record says its
lineage (`Experiment.lineage`: the best, the baseline and the noise floor count the current one only,
`Ledger.current()`). `[run] continue_lineage` (`nightlab run --continue`) goes on with the old one
instead. Uncommitted edits to the workspace's files are named: the loop runs the commit, not them.

Every step is safe to repeat: the new state is written first, and each start makes sure the earlier
lineages' refs exist and a lineage with no experiment yet starts at its origin, so a kill -9 between
the steps leaves nothing half done. Must not import: the engine, agents, the runner.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nightlab.server.core.settings import Settings
from nightlab.server.core.types import utc_now
from nightlab.server.loop import conditions
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Store
from nightlab.server.run.slots import SlotSpec

STATE_FILE = "lineage.json"
Say = Callable[[str, str], None]  # (text, level)


@dataclass
class LineageState:
    lineage: int  # the current lineage's number (the first is 1)
    origin: str  # the user's commit it started from
    started_at: str = ""
    earlier: list[dict[str, Any]] = field(default_factory=list)  # {lineage, origin, head, ref, experiments}
    reason: str = ""  # why it started (a change of conditions), "" for the user's code


def read_state(path: Path) -> LineageState | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return LineageState(
            int(data["lineage"]),
            str(data["origin"]),
            str(data.get("started_at", "")),
            list(data.get("earlier") or []),
            str(data.get("reason", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing (a tag from before lineages) or unreadable: derived from the ledger


def write_state(path: Path, state: LineageState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(asdict(state), indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def derived_state(store: Store, ledger: Ledger) -> LineageState:
    """A tag without lineage.json: its latest recorded lineage, started where its first experiment was
    based (the branch's start), or at the branch head when it has none."""
    lineage = ledger.current_lineage()
    parents = [e.parent_commit for e in ledger.experiments() if e.lineage == lineage and e.parent_commit]
    return LineageState(lineage, parents[0] if parents else store.head())


def follow(
    settings: Settings, store: Store, ledger: Ledger, created: bool, say: Say, slots: Sequence[SlotSpec] = ()
) -> int:
    """The lineage this start runs on (also set as `ledger.lineage`), after the branch moved to the
    user's HEAD if a new one starts; uncommitted edits are named. `created`: the store made the branch now.
    A start under other conditions (budget, its `slots`' device classes, protected files) than
    the lineage's experiments were measured under starts a new one too, from the lineage's origin."""
    path = ledger.dir / STATE_FILE
    state = read_state(path) or derived_state(store, ledger)
    ledger.lineage = state.lineage
    head, tag, k = store.user_head(), settings.tag, state.lineage
    had = len(ledger.current())
    moved = not store.same_workspace(state.origin, head)
    was = f"({state.origin[:7]} -> {head[:7]}) since lineage {k} of tag {tag} started"
    why = (
        ""
        if created or (moved and not settings.run.continue_lineage)
        else conditions.changed(settings, store, ledger, slots)
    )
    if created and had:  # the branch was deleted: made again from the user's HEAD, its chain is gone
        state = _next(state, head, None, had, "")
        say(
            f"branch {store.branch} was missing: made again from your HEAD {head[:7]}; lineage "
            f"{state.lineage} of tag {tag} starts there, with a new baseline",
            "warning",
        )
    elif why:
        state = _new_conditions(state, store, ledger, had, why, say, tag)
    elif moved and settings.run.continue_lineage:
        say(
            f"your HEAD moved on {was}; continuing lineage {k} as asked: the experiments go on from "
            f"branch {store.branch}, not from your new commits",
            "warning",
        )
    elif moved and had:
        ref = store.lineage_ref(k)
        state = _next(state, head, _old_head(store, ledger), had, ref)
        say(
            f"your HEAD moved on {was}: lineage {state.lineage} starts from your HEAD, with a new baseline; "
            f"lineage {k}'s {had} experiments stay in the ledger and its kept chain at {ref} "
            f"(`nightlab run --continue` goes on with lineage {k} instead)",
            "warning",
        )
    elif moved:  # nothing has run on the old code: the lineage simply starts from the new HEAD
        state = LineageState(k, head, utc_now(), state.earlier)
        say(f"your HEAD moved on {was}, before any experiment: it starts from {head[:7]}", "info")
    if state != read_state(path):
        write_state(path, state)
    _settle(store, ledger, state)
    say_uncommitted(settings, store, say)
    return state.lineage


def _next(state: LineageState, head: str, old_head: str | None, had: int, ref: str, reason: str = "") -> LineageState:
    ended = {"lineage": state.lineage, "origin": state.origin, "head": old_head, "ref": ref, "experiments": had}
    return LineageState(state.lineage + 1, head, utc_now(), [*state.earlier, ended], reason)


def _new_conditions(
    state: LineageState, store: Store, ledger: Ledger, had: int, why: str, say: Say, tag: str
) -> LineageState:
    """A new lineage from the same origin (the user's commit), because the conditions changed: its
    kept chain was judged under the old ones, so its baseline is measured again under the new."""
    k = state.lineage
    ref = store.lineage_ref(k)
    new = _next(state, state.origin, _old_head(store, ledger), had, ref, why)
    say(
        f"{why} since lineage {k} of tag {tag} started: lineage {new.lineage} starts again from "
        f"{state.origin[:7]} with a new baseline, so no verdict compares runs measured differently; "
        f"lineage {k}'s {had} experiments stay in the ledger and its kept chain at {ref}",
        "warning",
    )
    return new


def _old_head(store: Store, ledger: Ledger) -> str:
    """The old lineage's last kept commit: the branch head, or its parent when a kill -9 left the
    branch at an experiment whose verdict was half written (recovery would move it back)."""
    old = store.head()
    for e in ledger.unfinished():
        if e.parent_commit and store.ref_for(e.number) == old:
            old = e.parent_commit
    return old


def _settle(store: Store, ledger: Ledger, state: LineageState) -> None:
    """The state's refs and branch made true (again, after a kill -9 between the steps): each earlier
    lineage's chain has its ref; a lineage with no experiment yet has the branch at its origin."""
    for e in state.earlier:
        if e.get("head") and e.get("ref") and not store.has_ref(e["ref"]):
            store.keep_chain(e["ref"], e["head"])
    ledger.lineage = state.lineage
    if not ledger.current() and store.head() != state.origin:
        store.restart_at(state.origin)


def uncommitted(settings: Settings, store: Store) -> list[str]:
    """The workspace files the loop uses ([files] editable and protected) whose text on disk is not
    the user's last commit: the loop runs the commit, without them."""
    out = []
    for p in [*settings.files.editable, *settings.files.protected]:
        f = Path(settings.workspace) / p
        if f.is_file() and f.read_bytes() != store.file_bytes(p, "HEAD"):
            out.append(p)
    return out


def say_uncommitted(settings: Settings, store: Store, say: Say) -> None:
    changed = uncommitted(settings, store)
    if changed:
        one = len(changed) == 1
        say(
            f"{', '.join(changed)} {'has' if one else 'have'} uncommitted changes: the loop runs your last "
            f"commit ({store.user_head()[:7]}) without them; commit {'it' if one else 'them'} and run again "
            "to have the loop start from them",
            "warning",
        )
