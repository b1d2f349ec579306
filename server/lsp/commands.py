"""workspace/executeCommand handlers: the loop (start, pause, resume, stop), review (accept, reject,
rerun, show diff, apply best), the baseline, the status. Each decodes its argument with the protocol's payload class
and answers one (boundary.py); a SessionError becomes InvalidParams or RequestFailed."""

from __future__ import annotations

from typing import Any

from lsprotocol import types

from nightlab.protocol import methods as M
from nightlab.protocol.types import (
    AcceptArgs,
    AcceptResult,
    ExperimentArgs,
    ExperimentCommandResult,
    LineageArgs,
    LoopArgs,
    LoopStartOverrides,
)
from nightlab.server.editor import best as bst
from nightlab.server.editor import review as rv
from nightlab.server.editor.session import Session, SessionError
from nightlab.server.lsp.boundary import argument, decode, handler
from nightlab.server.lsp.features import ls_session as session
from nightlab.server.lsp.features import workspace_edit
from nightlab.server.lsp.server import NightlabServer


@handler
async def start(ls: NightlabServer, *args: Any):
    o = decode(LoopStartOverrides, argument(args), strict=True)
    return await session(ls, o.root).start(o.to_settings_overrides())


@handler
async def pause(ls: NightlabServer, *args: Any):
    return await session(ls, decode(LoopArgs, argument(args)).root).pause()


@handler
async def resume(ls: NightlabServer, *args: Any):
    return await session(ls, decode(LoopArgs, argument(args)).root).resume()


@handler
async def stop(ls: NightlabServer, *args: Any):
    return await session(ls, decode(LoopArgs, argument(args)).root).stop()


@handler
async def status(ls: NightlabServer, *args: Any):
    s = session(ls, decode(LoopArgs, argument(args)).root)
    await ls.settled(s)  # the folder's first attach, when it is still connecting
    return s.state()


@handler
async def lineage(ls: NightlabServer, *args: Any):
    a = decode(LineageArgs, argument(args))
    s = session(ls, a.root)
    state = await s.show_lineage(a.lineage)
    ls.shown_changed(s)
    return state


@handler
async def accept(ls: NightlabServer, *args: Any):
    """Apply the experiment's change (all hunks, or the ones named) to the user's buffer through
    workspace/applyEdit: the editor applies it as one undo step and keeps the focus where it is. Hunks
    that meet the user's own edits are left out and named in `conflicts` (the client opens the diff);
    when that leaves nothing to apply, the buffer is not touched and no review is recorded."""
    a = decode(AcceptArgs, argument(args))
    s = session(ls, a.root)
    _, parents, news = s.files(a.number)
    changed = [rel for rel, new in news.items() if parents[rel] != new]
    if a.path and a.path not in changed:  # nothing to apply there: an error, and no review recorded
        what = ", ".join(changed) or "no file"
        raise SessionError(f"experiment #{a.number} did not change {a.path} (it changed {what})", SessionError.INVALID)
    files = [
        _accept_plans(s, a.number, rel, parents[rel], news[rel], ls.buffer_text(s, rel), a.hunks)
        for rel in changed
        if not a.path or rel == a.path
    ]
    todo = {f.rel: f.plans for f in files if f.plans}
    conflicts = [c for f in files for c in f.conflicts]
    notes = [f.note for f in files if f.note]
    held = bst.describe(s, s.experiment(a.number))  # "#7's change alone; #7 was trained on top of #4 and #5"
    if todo and held and not notes:  # its own hunks went in: say it is not what was trained
        notes.append(held)
    if todo:  # every file in one edit: one undo step, and nothing half applied when a file is refused
        await _apply(ls, s, todo, f"experiment #{a.number}")
    if todo or not conflicts:  # nothing taken (all of it meets the user's edits): nothing to record
        s.review(a.number, "accepted")
        ls.publish_crashes(s)
    n = a.number
    if todo:
        head = f"applied experiment #{n}"
    elif conflicts:
        head = f"nothing applied: every hunk of experiment #{n} left to take meets your own edits"
    else:
        head = "already in your files"
    left = f"; left out (open the diff of #{n}): {'; '.join(conflicts)}" if conflicts else ""
    return AcceptResult(
        number=n,
        files=list(todo),
        already_applied=[i for f in files for i in f.applied],
        conflicts=conflicts,
        message=head + "".join(f"; {note}" for note in notes) + left,
    )


def _accept_plans(
    s: Session, number: int, rel: str, parent: str, new: str, buffer: str, only: list[int] | None
) -> rv.FileAccept:
    """One file's plan (editor/review.py): its hunks located, else merged three-way against its parent,
    else the experiment as trained; what meets the user's own edits left out and named."""
    return rv.accept_file(s, number, rel, parent, new, buffer, only)


async def _apply(ls: NightlabServer, s: Session, plans: dict[str, list], what: str) -> None:
    """One workspace/applyEdit for every file (one undo step), against each buffer's version (the file
    on disk when it is not open)."""
    changes: list = []
    for rel, todo in plans.items():
        uri = (s.root / rel).as_uri()
        doc = ls.workspace.text_documents.get(uri)
        changes += workspace_edit(uri, doc.version if doc is not None else None, todo).document_changes or []
    result = await ls.workspace_apply_edit_async(
        types.ApplyWorkspaceEditParams(edit=types.WorkspaceEdit(document_changes=changes), label=f"Nightlab: {what}")
    )
    if not result.applied:
        raise SessionError(f"the editor did not apply {what}: {result.failure_reason or ''}")


@handler
async def apply_best(ls: NightlabServer, *args: Any):
    """The best commit's files merged three-way into the buffers, as one workspace/applyEdit; the hunks
    that meet the user's own edits are left out and named in `conflicts` (all of them: the buffers are
    not touched, no review is recorded, and the message says to open the diff)."""
    s = session(ls, decode(LoopArgs, argument(args)).root)
    plan = bst.plan_best(s, lambda rel: ls.buffer_text(s, rel))
    if plan is None:
        raise SessionError("the best is still the baseline: the loop has kept no change to apply yet")
    n, kept = plan.best.number, ", ".join(f"#{e.number}" for e in plan.kept)
    todo = {f.path: f.merge.of("apply") for f in plan.files if f.merge.changed}
    done = [p.hunk.index for f in plan.files for p in f.merge.of("applied")]
    conflicts = [c for f in plan.files for c in rv.conflict_entries(f.path, f.merge, f.merge.plans)]
    text = plan.conflicts()
    if not todo and conflicts:
        message = (
            f"nothing applied: every hunk of the best #{n} left to take meets your own edits ({text}); "
            f"open the diff of #{n} and take them by hand"
        )
        return AcceptResult(number=n, files=[], already_applied=done, conflicts=conflicts, message=message)
    if todo:
        await _apply(ls, s, todo, f"best #{n}")
    s.review(n, "accepted")
    ls.publish_crashes(s)
    head = f"{plan.title}: {kept}" if todo else f"the best #{n} ({kept}) is already in your files"
    left = f"; left out (open the diff of #{n}): {text}" if conflicts else ""
    return AcceptResult(number=n, files=sorted(todo), already_applied=done, conflicts=conflicts, message=head + left)


@handler
def reject(ls: NightlabServer, *args: Any):
    a = decode(ExperimentArgs, argument(args))
    session(ls, a.root).review(a.number, "rejected")
    return ExperimentCommandResult(number=a.number, message=f"experiment #{a.number} rejected")


@handler
async def rerun(ls: NightlabServer, *args: Any):
    a = decode(ExperimentArgs, argument(args))
    return await session(ls, a.root).rerun(a.number)


@handler
async def measure_baseline(ls: NightlabServer, *args: Any):
    return await session(ls, decode(LoopArgs, argument(args)).root).measure_baseline()


@handler
def show_diff(ls: NightlabServer, *args: Any):
    a = decode(ExperimentArgs, argument(args))
    return session(ls, a.root).diff(a.number)


COMMANDS = {
    M.LOOP_START: start,
    M.LOOP_PAUSE: pause,
    M.LOOP_RESUME: resume,
    M.LOOP_STOP: stop,
    M.STATUS: status,
    M.LOOP_LINEAGE: lineage,
    M.EXPERIMENT_ACCEPT: accept,
    M.EXPERIMENT_REJECT: reject,
    M.EXPERIMENT_RERUN: rerun,
    M.BASELINE_MEASURE: measure_baseline,
    M.EXPERIMENT_SHOW_DIFF: show_diff,
    M.EXPERIMENT_APPLY_BEST: apply_best,
}


def setup(server: NightlabServer) -> None:
    for name, fn in COMMANDS.items():
        server.command(name)(fn)
