"""Document features: code actions (apply an experiment, or a hunk of it), code lenses, hover with
a line's experiment history, inlay hints on the best chain, progress cancellation, and the custom
requests panels use (nightlab/experiments, nightlab/experimentDiff, nightlab/experimentCurve). Thin:
annotate.py decides; the custom requests decode their params and answer payloads (boundary.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from lsprotocol import types

from nightlab.protocol import methods as M
from nightlab.protocol.convert import experiment_payload
from nightlab.protocol.types import (
    CurvePoint,
    ExperimentCurve,
    ExperimentCurveParams,
    ExperimentDiffParams,
    ExperimentsPage,
    ExperimentsParams,
    InFile,
)
from nightlab.server.changes.diffs import diff_summary
from nightlab.server.editor import annotate, review
from nightlab.server.editor import best as bst
from nightlab.server.editor.session import Session, SessionError
from nightlab.server.lsp.boundary import decode, handler
from nightlab.server.lsp.server import NightlabServer, uri_to_path

log = logging.getLogger(__name__)


def _texts(session: Session, rel: str, exps) -> list[annotate.FileTexts]:
    """Parent and experiment text of `rel` for each experiment that changed it (read once, and shared with
    the in-file states: review.py keeps them, commits never change)."""
    out = []
    for e, parent, new in review.index(session).texts(exps, rel):
        if parent != new:
            contains = session.__dict__.setdefault("_contains_cache", {})  # a commit's ancestry is fixed
            if e.commit not in contains:
                contains[e.commit] = _contains(session, e)
            out.append(annotate.FileTexts(e, parent, new, contains=contains[e.commit]))
    return out


def _contains(session: Session, exp) -> str:
    try:
        return bst.describe(session, exp)
    except Exception:  # a ledger or lineage file being rewritten: say nothing rather than fail the action
        return ""


def _best(ls: NightlabServer, session: Session, rel: str) -> bst.BestPlan | None:
    """Apply best, planned against the buffers, when the best commit changes `rel`; else None."""
    try:
        plan = bst.plan_best(session, lambda path: ls.buffer_text(session, path))
    except (SessionError, OSError):
        return None  # no best yet: no action, no lens
    if plan is None or not any(f.path == rel for f in plan.files):
        return None
    return plan


def _best_command(plan: bst.BestPlan) -> tuple[str, types.Command] | None:
    """The title and command of Apply best, or None when the buffers hold it already. The command (not
    an edit in the action) so that the server can say which hunks it left out."""
    todo = sum(len(f.merge.of("apply")) for f in plan.files)
    conflicts = sum(len(f.merge.of("conflict")) for f in plan.files)
    if not todo and not conflicts:
        return None
    if not todo:
        title = f"Open the diff of the best #{plan.best.number}: {conflicts} hunk(s) meet your own edits"
        diff = types.Command(title=title, command=M.EXPERIMENT_SHOW_DIFF, arguments=[{"number": plan.best.number}])
        return title, diff
    title = plan.title + (f", {conflicts} hunk(s) left out: they meet your own edits" if conflicts else "")
    return title, types.Command(title=title, command=M.EXPERIMENT_APPLY_BEST, arguments=[{}])


def text_edits(plans) -> list[types.TextEdit]:
    return [
        types.TextEdit(
            range=types.Range(
                start=types.Position(line=p.range[0], character=p.range[1]),
                end=types.Position(line=p.range[2], character=p.range[3]),
            ),
            new_text=p.text,
        )
        for p in plans
    ]


def workspace_edit(uri: str, version: int | None, plans) -> types.WorkspaceEdit:
    """One TextDocumentEdit against the buffer's version: the whole change is one undo step."""
    return types.WorkspaceEdit(
        document_changes=[
            types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                edits=text_edits(plans),
            )
        ]
    )


def _document(ls: NightlabServer, uri: str):
    """(session, workspace path, open document) for an editable file of a workspace, else None."""
    found = ls.editable_path(uri)
    if found is None:
        return None
    return found[0], found[1], ls.workspace.get_text_document(uri)


def initialized(ls: NightlabServer, params: types.InitializedParams) -> None:
    folders = ls.workspace.folders or {}
    for folder in folders.values():
        ls.add_folder(uri_to_path(folder.uri))
    if not folders and ls.workspace.root_uri:
        ls.add_folder(uri_to_path(ls.workspace.root_uri))
    for session in ls.sessions.values():
        if session.is_workspace():
            ls.publish_crashes(session)
            ls.protocol.notify(M.LOOP_STATE, session.state().to_wire())  # where the loop stands, at once
            ls.attach(session, _attach(ls, session))


def folders_changed(ls: NightlabServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
    """A folder added to the workspace gets its session (attached to its loop when one runs); a removed
    one's session lets go of its loop, which goes on."""
    for folder in params.event.removed:
        session = ls.sessions.pop(uri_to_path(folder.uri), None)
        ls.attaching.pop(uri_to_path(folder.uri), None)
        if session is not None:
            ls.tasks.add(task := asyncio.ensure_future(session.detach()))
            task.add_done_callback(ls.tasks.discard)
    for folder in params.event.added:
        session = ls.add_folder(uri_to_path(folder.uri))
        if session.is_workspace():
            ls.protocol.notify(M.LOOP_STATE, session.state().to_wire())
            ls.attach(session, _attach(ls, session))


async def _attach(ls: NightlabServer, session: Session) -> None:
    """Follow the folder's loop process when one runs (its state comes as an event); else say whether the
    last one died, and look for one started from a terminal."""
    try:
        if not await session.attach() and session.link is not None and session.link.died:
            ls.protocol.notify(M.LOOP_STATE, session.state().to_wire())
    except Exception:
        log.exception("attaching to the loop of %s failed", session.root)


def code_action(ls: NightlabServer, params: types.CodeActionParams):
    found = _document(ls, params.text_document.uri)
    if found is None:
        return None
    session, rel, doc = found
    metric = session.settings().metric
    texts = _texts(session, rel, annotate.reviewable(session.experiments()))
    out = []
    plan = _best(ls, session, rel)
    best = _best_command(plan) if plan is not None else None
    if best is not None:
        out.append(types.CodeAction(title=best[0], kind=types.CodeActionKind.RefactorRewrite, command=best[1]))
    for a in annotate.apply_actions(texts, doc.source, rel, metric.name, metric.direction):
        if a.conflicts:
            out.append(
                types.CodeAction(
                    title=a.title,
                    kind=types.CodeActionKind.QuickFix,
                    command=types.Command(
                        title=a.title, command=M.EXPERIMENT_SHOW_DIFF, arguments=[{"number": a.number}]
                    ),
                )
            )
            continue
        out.append(
            types.CodeAction(
                title=a.title,
                kind=types.CodeActionKind.RefactorRewrite,
                edit=workspace_edit(doc.uri, doc.version, a.edits),
                data={"number": a.number, "hunk": a.hunk},
            )
        )
    return out


def _summary_lens(session: Session) -> types.CodeLens:
    """The lens at the top of the file: best, baseline, experiments, what runs now, the loop's state."""
    state = session.state()
    parts = []
    if state.best:
        parts.append(f"best {state.best.metric:.4f} (#{state.best.number})")
    if state.baseline is not None:
        parts.append(f"baseline {state.baseline:.4f}")
    parts.append(f"{state.experiments_run} experiments")
    budget = session.settings().budget
    for number in state.running:
        progress, exp = session.progress(number), session.ledger().get(number)
        fraction = (progress.fraction or 0.0) if progress else 0.0
        left = f", ~{budget.seconds * (1 - fraction):.0f} s left" if budget.mode == "time" else ""
        parts.append(f"running #{number} {exp.description if exp else ''} ({100 * fraction:.0f}%{left})")
    zero = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
    return types.CodeLens(
        range=zero,
        command=types.Command(
            title="Nightlab: " + " | ".join(parts) + f" [{state.state}]", command=M.STATUS, arguments=[]
        ),
    )


def code_lens(ls: NightlabServer, params: types.CodeLensParams):
    found = _document(ls, params.text_document.uri)
    if found is None:
        return None
    session, rel, doc = found
    lenses = [_summary_lens(session)]
    plan = _best(ls, session, rel)
    best = _best_command(plan) if plan is not None else None
    if best is not None:
        lenses.append(types.CodeLens(range=lenses[0].range, command=best[1]))
    texts = _texts(session, rel, annotate.reviewable(session.experiments(), limit=1))
    metric = session.settings().metric
    for a in annotate.apply_actions(texts, doc.source, rel, metric.name, metric.direction):
        if a.conflicts or a.hunk is not None:
            continue
        for p in a.edits:
            at = types.Range(
                start=types.Position(line=p.range[0], character=0), end=types.Position(line=p.range[0], character=0)
            )
            lenses.append(
                types.CodeLens(
                    range=at,
                    command=types.Command(
                        title=f"Accept #{a.number}",
                        command=M.EXPERIMENT_ACCEPT,
                        arguments=[{"number": a.number, "hunks": [p.hunk.index]}],
                    ),
                )
            )
            lenses.append(
                types.CodeLens(
                    range=at,
                    command=types.Command(
                        title=f"Reject #{a.number}", command=M.EXPERIMENT_REJECT, arguments=[{"number": a.number}]
                    ),
                )
            )
    return lenses


def hover(ls: NightlabServer, params: types.HoverParams):
    found = _document(ls, params.text_document.uri)
    if found is None:
        return None
    session, rel, doc = found
    lines = doc.lines
    if params.position.line >= len(lines):
        return None
    exps = [
        e
        for e in reversed(session.experiments())
        if e.commit and not e.is_baseline and e.status in ("keep", "discard", "crash")
    ][:50]
    texts = _texts(session, rel, exps)
    metric = session.settings().metric
    history = annotate.line_history(
        texts,
        lines[params.position.line],
        metric.name,
        direction=metric.direction,
        in_file=review.in_file(session, [t.exp for t in texts], lambda path: ls.buffer_text(session, path)),
    )
    if not history:
        return None
    body = "**Nightlab: experiments on this line** (newest first)\n\n" + "\n".join(history)
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=body))


def inlay_hint(ls: NightlabServer, params: types.InlayHintParams):
    if ls.options.get("inlayHints") is False:
        return None
    found = _document(ls, params.text_document.uri)
    if found is None:
        return None
    session, rel, doc = found
    kept = [e for e in reversed(session.experiments()) if e.status == "keep" and not e.is_baseline]
    metric = session.settings().metric
    hints = annotate.chain_hints(_texts(session, rel, kept[:50]), doc.source, metric.name, metric.direction)
    lines = doc.lines
    return [
        types.InlayHint(
            position=types.Position(line=i, character=len(lines[i].rstrip("\r\n"))),
            label=label,
            kind=types.InlayHintKind.Parameter,
            padding_left=True,
        )
        for i, label in hints
        if params.range.start.line <= i <= params.range.end.line
    ]


def progress_cancel(ls: NightlabServer, params: types.WorkDoneProgressCancelParams) -> None:
    ls.cancel_progress(params.token)


def ls_session(ls: NightlabServer, root: str | None) -> Session:
    """The session of the folder `root` names (the first one when left out)."""
    try:
        return ls.session_for(root)
    except LookupError as exc:  # a root that is no open folder is a bad argument; no folder at all, a state
        raise SessionError(str(exc), SessionError.INVALID if root else SessionError.CONFLICT) from None


@handler
async def experiments(ls: NightlabServer, params: Any) -> ExperimentsPage:
    """A page of the ledger, each experiment with `inFile` computed against the buffers (open, else on
    disk) for the page's experiments only. The first look at a commit reads git (about 8 ms a commit):
    in a worker thread, on the buffers as they are now, so the server answers other requests meanwhile;
    review.py keeps what it read (commits never change) and each buffer's answers."""
    p = decode(ExperimentsParams, params)
    offset, limit = max(0, p.offset or 0), max(0, 100 if p.limit is None else p.limit)
    session = ls_session(ls, p.root)
    exps = [e for e in session.experiments() if p.status in (None, e.status)]
    page = exps[offset : offset + limit]
    held: dict[int, InFile | None] = {}
    if page:
        buffers = {rel: ls.buffer_text(session, rel) for rel in session.settings().files.editable}
        held = await asyncio.to_thread(review.in_file, session, page, buffers.__getitem__)
    return ExperimentsPage(
        total=len(exps),
        offset=offset,
        experiments=[
            dataclasses.replace(
                experiment_payload(e.to_json(), diff_summary(e.diff) if e.diff else ""), in_file=held.get(e.number)
            )
            for e in page
        ],
    )


@handler
def experiment_diff(ls: NightlabServer, params: Any):
    p = decode(ExperimentDiffParams, params)
    return ls_session(ls, p.root).diff(p.number)


@handler
def experiment_curve(ls: NightlabServer, params: Any) -> ExperimentCurve:
    p = decode(ExperimentCurveParams, params)
    samples = ls_session(ls, p.root).curve(p.number, p.stage)
    return ExperimentCurve(
        number=p.number,
        stage=p.stage,
        points=[CurvePoint(step=s.step, elapsed_s=s.elapsed_s, loss=s.loss) for s in samples],
    )


async def shutdown(ls: NightlabServer, params: Any) -> None:
    """An editor that restarts or closes its server lets go of the loops: each is a process of its own and
    goes on (the next server attaches again), unless the client asked for `stopLoopOnExit`, when each is
    stopped the way `stop` does (the running experiments recorded as interrupted, their training killed)."""
    stop = bool(ls.options.get("stopLoopOnExit"))
    for session in list(ls.sessions.values()):
        if stop and session.running():
            await session.stop()
        await session.detach()


FEATURES = {
    types.INITIALIZED: initialized,
    types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS: folders_changed,
    types.TEXT_DOCUMENT_CODE_ACTION: code_action,
    types.TEXT_DOCUMENT_CODE_LENS: code_lens,
    types.TEXT_DOCUMENT_HOVER: hover,
    types.TEXT_DOCUMENT_INLAY_HINT: inlay_hint,
    types.WINDOW_WORK_DONE_PROGRESS_CANCEL: progress_cancel,
    M.EXPERIMENTS: experiments,
    M.EXPERIMENT_DIFF: experiment_diff,
    M.EXPERIMENT_CURVE: experiment_curve,
    types.SHUTDOWN: shutdown,
}


def setup(server: NightlabServer) -> None:
    for name, fn in FEATURES.items():
        server.feature(name)(fn)
