"""workspace/executeCommand handlers: the loop (start, pause, resume, stop), review (accept, reject,
rerun, show diff), the baseline, the status. Each returns a result dict or raises a clear error."""
from __future__ import annotations

from typing import Any

from lsprotocol import types

from nightlab.protocol import methods as M


from nightlab.protocol.types import AcceptResult

from nightlab.server.changes import hunks as hk
from nightlab.server.editor.session import Session, SessionError
from nightlab.server.lsp.features import workspace_edit
from nightlab.server.lsp.server import NightlabServer


def _arg(args: tuple, key: str | None = None, default: Any = None) -> Any:
    """The first argument (an object, or a bare number for commands that take one)."""
    if not args or args[0] is None:
        return default
    first = args[0]
    if key is None:
        return first
    if isinstance(first, dict):
        return first.get(key, default)
    return first if key == "number" else default


def _session(ls: NightlabServer, args: tuple) -> Session:
    root = _arg(args, "root")
    try:
        return ls.session_for(root)
    except LookupError as exc:
        raise SessionError(str(exc)) from None


def setup(server: NightlabServer) -> None:
    @server.command(M.LOOP_START)
    async def start(ls: NightlabServer, *args):
        overrides = {k: v for k, v in (_arg(args, default={}) or {}).items() if k != "root"}
        return await _session(ls, args).start(overrides)

    @server.command(M.LOOP_PAUSE)
    def pause(ls: NightlabServer, *args):
        return _session(ls, args).pause()

    @server.command(M.LOOP_RESUME)
    def resume(ls: NightlabServer, *args):
        return _session(ls, args).resume()

    @server.command(M.LOOP_STOP)
    async def stop(ls: NightlabServer, *args):
        return await _session(ls, args).stop()

    @server.command(M.STATUS)
    def status(ls: NightlabServer, *args):
        return _session(ls, args).state().to_wire()

    @server.command(M.EXPERIMENT_ACCEPT)
    async def accept(ls: NightlabServer, *args):
        """Apply the experiment's change (all hunks, or the ones named) to the user's buffer through
        workspace/applyEdit: the editor applies it as one undo step and keeps the focus where it is."""
        session = _session(ls, args)
        number = int(_arg(args, "number"))
        wanted, only = _arg(args, "hunks"), _arg(args, "path")
        exp, parents, news = session.files(number)
        applied, skipped = [], []
        for rel, new in news.items():
            if parents[rel] == new or (only and rel != only):
                continue
            uri = (session.root / rel).as_uri()
            doc = ls.workspace.text_documents.get(uri)
            buffer = ls.buffer_text(session, rel)
            plans = hk.plan(parents[rel], new, buffer)
            chosen = [p for p in plans if wanted is None or p.hunk.index in wanted]
            conflicts = [p for p in chosen if p.state == "conflict"]
            if conflicts:
                raise SessionError(f"experiment #{number}: hunk(s) {', '.join(str(p.hunk.index + 1) for p in conflicts)} "
                                   f"of {rel} no longer apply to your file; open its diff instead")
            todo = [p for p in chosen if p.state == "apply"]
            skipped += [p.hunk.index for p in chosen if p.state == "applied"]
            if not todo:
                continue
            edit = workspace_edit(uri, doc.version if doc is not None else None, todo)
            result = await ls.workspace_apply_edit_async(
                types.ApplyWorkspaceEditParams(edit=edit, label=f"Nightlab: experiment #{number}"))
            if not result.applied:
                raise SessionError(f"the editor did not apply experiment #{number}: {result.failure_reason or ''}")
            applied.append(rel)
        session.review(number, "accepted")
        ls.publish_crashes(session)
        return AcceptResult(number=number, files=applied, already_applied=skipped,
                            message=f"applied experiment #{number}" if applied else "already in your files").to_wire()

    @server.command(M.EXPERIMENT_REJECT)
    def reject(ls: NightlabServer, *args):
        session = _session(ls, args)
        number = int(_arg(args, "number"))
        session.review(number, "rejected")
        return {"number": number, "message": f"experiment #{number} rejected"}

    @server.command(M.EXPERIMENT_RERUN)
    def rerun(ls: NightlabServer, *args):
        session = _session(ls, args)
        return session.rerun(int(_arg(args, "number")))

    @server.command(M.BASELINE_MEASURE)
    def measure_baseline(ls: NightlabServer, *args):
        return _session(ls, args).measure_baseline()

    @server.command(M.EXPERIMENT_SHOW_DIFF)
    def show_diff(ls: NightlabServer, *args):
        return _session(ls, args).diff(int(_arg(args, "number"))).to_wire()
