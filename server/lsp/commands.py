"""workspace/executeCommand handlers: the loop (start, pause, resume, stop), review (accept, reject,
rerun, show diff), the baseline, the status. Each decodes its argument with the protocol's payload class
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
    applied: list[str] = []
    skipped: list[int] = []
    for rel, new in news.items():
        if parents[rel] == new or (a.path and rel != a.path):
            continue
        plans = [
            p for p in hk.plan(parents[rel], new, ls.buffer_text(s, rel)) if a.hunks is None or p.hunk.index in a.hunks
        ]
        conflicts = ", ".join(str(p.hunk.index + 1) for p in plans if p.state == "conflict")
        if conflicts:
            raise SessionError(
                f"experiment #{a.number}: hunk(s) {conflicts} of {rel} no longer apply to your "
                "file; open its diff instead"
            )
        todo = [p for p in plans if p.state == "apply"]
        skipped += [p.hunk.index for p in plans if p.state == "applied"]
        if todo:
            await _apply(ls, s, rel, a.number, todo)
            applied.append(rel)
    s.review(a.number, "accepted")
    ls.publish_crashes(s)
    return AcceptResult(
        number=a.number,
        files=applied,
        already_applied=skipped,
        message=f"applied experiment #{a.number}" if applied else "already in your files",
    )


async def _apply(ls: NightlabServer, s: Session, rel: str, number: int, plans: list) -> None:
    """One workspace/applyEdit against the buffer's version (the file on disk when it is not open)."""
    uri = (s.root / rel).as_uri()
    doc = ls.workspace.text_documents.get(uri)
    edit = workspace_edit(uri, doc.version if doc is not None else None, plans)
    result = await ls.workspace_apply_edit_async(
        types.ApplyWorkspaceEditParams(edit=edit, label=f"Nightlab: experiment #{number}")
    )
    if not result.applied:
        raise SessionError(f"the editor did not apply experiment #{number}: {result.failure_reason or ''}")


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
}


def setup(server: NightlabServer) -> None:
    for name, fn in COMMANDS.items():
        server.command(name)(fn)
