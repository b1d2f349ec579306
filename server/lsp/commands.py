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
    LoopArgs,
    LoopStartOverrides,
)
from nightlab.server.changes import hunks as hk
from nightlab.server.changes import merge as mg
from nightlab.server.editor import best as bst
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
def pause(ls: NightlabServer, *args: Any):
    return session(ls, decode(LoopArgs, argument(args)).root).pause()


@handler
def resume(ls: NightlabServer, *args: Any):
    return session(ls, decode(LoopArgs, argument(args)).root).resume()


@handler
async def stop(ls: NightlabServer, *args: Any):
    return await session(ls, decode(LoopArgs, argument(args)).root).stop()


@handler
def status(ls: NightlabServer, *args: Any):
    return session(ls, decode(LoopArgs, argument(args)).root).state()


@handler
async def accept(ls: NightlabServer, *args: Any):
    """Apply the experiment's change (all hunks, or the ones named) to the user's buffer through
    workspace/applyEdit: the editor applies it as one undo step and keeps the focus where it is."""
    a = decode(AcceptArgs, argument(args))
    s = session(ls, a.root)
    _, parents, news = s.files(a.number)
    changed = [rel for rel, new in news.items() if parents[rel] != new]
    if a.path and a.path not in changed:  # nothing to apply there: an error, and no review recorded
        what = ", ".join(changed) or "no file"
        raise SessionError(f"experiment #{a.number} did not change {a.path} (it changed {what})", SessionError.INVALID)
    todo: dict[str, list] = {}
    skipped: list[int] = []
    notes: list[str] = []
    for rel, new in news.items():
        if parents[rel] == new or (a.path and rel != a.path):
            continue
        plans, done, note = _accept_plans(s, a.number, rel, parents[rel], new, ls.buffer_text(s, rel), a.hunks)
        skipped += done
        notes += [note] if note else []
        if plans:
            todo[rel] = plans
    held = bst.describe(s, s.experiment(a.number))  # "#7's change alone; #7 was trained on top of #4 and #5"
    if todo and held and not notes:  # its own hunks went in: say it is not what was trained
        notes.append(held)
    if todo:  # every file in one edit: one undo step, and nothing half applied when a file is refused
        await _apply(ls, s, todo, f"experiment #{a.number}")
    applied = list(todo)
    s.review(a.number, "accepted")
    ls.publish_crashes(s)
    return AcceptResult(
        number=a.number,
        files=applied,
        already_applied=skipped,
        message=(f"applied experiment #{a.number}" if applied else "already in your files")
        + "".join(f"; {n}" for n in notes),
    )


def _accept_plans(
    s: Session, number: int, rel: str, parent: str, new: str, buffer: str, only: list[int] | None
) -> tuple[list, list[int], str]:
    """(plans to apply, hunk indices already there, a note on what was applied) for one file.

    The experiment's hunks placed into the buffer first; when one no longer fits (the buffer lacks the
    kept changes the experiment was trained on top of, or the user edited next to it) and the whole
    change is asked for: the change merged three-way against its parent's file, then, when that still
    meets the buffer, the experiment as trained (its commit against the loop's origin: its kept chain
    with it), said so. Only when that fails too is it refused, naming the hunks."""
    plans = [p for p in hk.plan(parent, new, buffer) if only is None or p.hunk.index in only]
    conflicts = [p for p in plans if p.state == "conflict"]
    if not conflicts:
        return [p for p in plans if p.state == "apply"], [p.hunk.index for p in plans if p.state == "applied"], ""
    numbers = ", ".join(str(p.hunk.index + 1) for p in conflicts)
    refused = f"experiment #{number}: hunk(s) {numbers} of {rel} no longer apply to your file; open its diff instead"
    if only is not None:
        raise SessionError(refused)
    merged = mg.merge(parent, new, buffer)
    if not merged.of("conflict"):
        return merged.of("apply"), [], f"{rel}: merged three-way with your file"
    exp = s.experiment(number)
    under = bst.chain(s, exp)
    base_commit = bst.origin(s)
    if under and base_commit:
        try:
            base = s.store().read_file(rel, base_commit)
        except Exception:
            base = ""
        whole = mg.merge(base, new, buffer)
        if not whole.of("conflict"):
            names = ", ".join(f"#{e.number}" for e in under)
            return whole.of("apply"), [], f"{rel}: #{number} as trained, with the kept {names} under it"
    raise SessionError(f"{refused} ({mg.conflict_text(rel, merged)})")


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
    that meet the user's own edits are left out and named (all of them: nothing applied, an error)."""
    s = session(ls, decode(LoopArgs, argument(args)).root)
    plan = bst.plan_best(s, lambda rel: ls.buffer_text(s, rel))
    if plan is None:
        raise SessionError("the best is still the baseline: the loop has kept no change to apply yet")
    n, kept = plan.best.number, ", ".join(f"#{e.number}" for e in plan.kept)
    todo = {f.path: f.merge.of("apply") for f in plan.files if f.merge.changed}
    done = [p.hunk.index for f in plan.files for p in f.merge.of("applied")]
    conflicts = plan.conflicts()
    if not todo and conflicts:
        raise SessionError(
            f"nothing applied: every hunk of the best #{n} left to take meets your own edits ({conflicts}); "
            f"open the diff of #{n} and take them by hand"
        )
    if todo:
        await _apply(ls, s, todo, f"best #{n}")
    s.review(n, "accepted")
    ls.publish_crashes(s)
    head = f"{plan.title}: {kept}" if todo else f"the best #{n} ({kept}) is already in your files"
    left = f"; left out (open the diff of #{n}): {conflicts}" if conflicts else ""
    return AcceptResult(number=n, files=sorted(todo), already_applied=done, message=head + left)


@handler
def reject(ls: NightlabServer, *args: Any):
    a = decode(ExperimentArgs, argument(args))
    session(ls, a.root).review(a.number, "rejected")
    return ExperimentCommandResult(number=a.number, message=f"experiment #{a.number} rejected")


@handler
def rerun(ls: NightlabServer, *args: Any):
    a = decode(ExperimentArgs, argument(args))
    return session(ls, a.root).rerun(a.number)


@handler
def measure_baseline(ls: NightlabServer, *args: Any):
    return session(ls, decode(LoopArgs, argument(args)).root).measure_baseline()


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
