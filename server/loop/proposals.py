"""What the engine tells an agent and does with its answer: the context of a proposal, the edits
applied in memory, the feedback for an LLM whose edit did not apply, the diff recorded.
Must not import: pygls, rich, typer, the runner's processes.
"""

from __future__ import annotations

import difflib
import shlex
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from nightlab.server.changes.diffs import diff_summary
from nightlab.server.changes.edits import EditError, apply_edits
from nightlab.server.core.settings import Settings
from nightlab.server.core.types import Experiment, ExperimentContext, ExperimentStatus, FileEdit, HistoryItem, Proposal
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Store

# (proposal as made, parent commit, editable files there, the files to commit, why it cannot run or "")
Files = tuple[Proposal, str, dict[str, str], dict[str, str], str]


def resolve_command(command: str) -> str:
    """`python ...` means the interpreter Nightlab runs in (the one with torch), not whatever `python`
    is first on PATH: that is what a user who installed Nightlab in a virtualenv expects."""
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    return shlex.join(argv)


def context(
    settings: Settings, ledger: Ledger, store: Store, sigma: float | None, in_flight: list[str]
) -> ExperimentContext:
    """Everything an agent may read: the editable files at the best, program.md, the history."""
    files = {p: store.read_file(p) for p in settings.files.editable}
    program_path = store.workdir / settings.files.program
    program = program_path.read_text(encoding="utf-8") if program_path.exists() else ""
    history = [
        HistoryItem(
            number=e.number,
            description=e.description,
            status="baseline" if e.is_baseline else str(e.status),
            metric=e.metric,
            delta=e.delta,
            diff_summary=diff_summary(e.diff) if e.diff else "",
            meta=e.meta,
            reason=e.decision_reason,
        )
        for e in ledger.experiments()
        if e.status != ExperimentStatus.RUNNING
    ]  # in_flight says those
    best = ledger.best(settings.metric.direction)
    return ExperimentContext(
        program=program,
        files=files,
        editable=list(settings.files.editable),
        history=history,
        metric_name=settings.metric.name,
        direction=settings.metric.direction,
        best=best.metric if best else None,
        seed=settings.run.seed + ledger.next_number(),
        noise_sigma=sigma,
        in_flight=list(in_flight),
    )


def apply(settings: Settings, files: dict[str, str], proposal: Proposal) -> dict[str, str]:
    """The editable files after the proposal's edits (raises EditError)."""
    s = settings.files
    return {**files, **apply_edits(files, proposal.edits, list(s.editable), list(s.protected))}


def feedback(exc: EditError, proposal: Proposal) -> str:
    """What to tell an LLM whose edit did not apply: the reason and the SEARCH text that failed."""
    text = str(exc)
    index = getattr(exc, "index", None)
    if isinstance(index, int) and 1 <= index <= len(proposal.edits):
        text += f"\nThe SEARCH text that failed was:\n{proposal.edits[index - 1].search}"
    return text + "\nCopy SEARCH text exactly from the current file shown above."


def add_usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two calls' usage added up (tokens, cost); non-numbers keep the first call's."""
    out = dict(a)
    for key, value in b.items():
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and isinstance(out.get(key, 0), (int, float))
        ):
            out[key] = out.get(key, 0) + value
        else:
            out.setdefault(key, value)
    return out


def unified(old: dict[str, str], new: dict[str, str]) -> str:
    out: list[str] = []
    for path in sorted(new):
        out.extend(
            difflib.unified_diff(
                old.get(path, "").splitlines(True), new[path].splitlines(True), f"a/{path}", f"b/{path}"
            )
        )
    return "".join(out)


def requeue(exp: Experiment, settings: Settings, store: Store) -> Proposal | None:
    """A keep whose base is no longer the best, queued again on top of it; None (and the reason in
    the record) when its edits no longer apply there."""
    edits = [FileEdit(**e) for e in exp.edits]
    head = {p: store.read_file(p) for p in settings.files.editable}
    proposal = Proposal(
        description=exp.description,
        edits=edits,
        hypothesis=exp.hypothesis,
        agent=exp.agent,
        meta=dict(exp.meta),
        kind=exp.kind,
        rerun_of=exp.number,
        port_of=exp.port_of,
    )
    try:
        apply(settings, head, proposal)
    except EditError as exc:
        exp.decision_reason = exp.decision_reason.replace(
            "queued again on top of it", f"it no longer applies there ({exc.reason})"
        )
        return None
    return proposal


async def files_for(
    settings: Settings, store: Store, proposal: Proposal, again: Callable[[str], Awaitable[Proposal]] | None
) -> Files:
    """The files a proposal makes from the current head. `again(feedback)`: asks the agent once more
    when the edits do not apply (None: the edit's failure is the experiment's crash)."""
    parent = store.head()
    old = {p: store.read_file(p, parent) for p in settings.files.editable}
    if proposal.invalid:
        return proposal, parent, old, old, f"the agent's proposal was invalid: {proposal.invalid}"
    if proposal.files is not None:
        return proposal, parent, old, {**old, **proposal.files}, ""
    try:
        return proposal, parent, old, apply(settings, old, proposal), ""
    except EditError as exc:
        if again is None:
            return proposal, parent, old, old, f"edit rejected: {exc}"
        retry = await again(feedback(exc, proposal))
    retry = replace(retry, usage=add_usage(proposal.usage, retry.usage))
    parent = store.head()  # the branch may have moved while the agent thought
    old = {p: store.read_file(p, parent) for p in settings.files.editable}
    if retry.invalid:
        return retry, parent, old, old, f"the agent's proposal was invalid: {retry.invalid}"
    try:
        return retry, parent, old, apply(settings, old, retry), ""
    except EditError as exc:
        return retry, parent, old, old, f"edit rejected twice: {exc}"
