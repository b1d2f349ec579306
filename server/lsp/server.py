"""The Nightlab language server (pygls 2, stdio): one Session per workspace folder; engine events
become notifications, `$/progress` and diagnostics; documents get actions, lenses, hovers and hints.

Handlers are thin: they translate LSP to Session/annotate calls and back (features.py, commands.py,
registered on this server by app.py, which knows them all; this module knows none of them).
This package is the only code that imports pygls or lsprotocol.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.io_ import StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol.language_server import LanguageServerProtocol, lsp_method

from nightlab.protocol import events as ev
from nightlab.protocol import methods as M
from nightlab.protocol.convert import experiment_finished, experiment_started, progress_payload
from nightlab.server.changes.diffs import diff_summary
from nightlab.server.core.types import ExperimentStatus
from nightlab.server.editor.annotate import crash_location
from nightlab.server.editor.session import Session
from nightlab.server.lsp import stdio

log = logging.getLogger(__name__)
LENS_EVERY_S = 3.0  # code lenses refreshed at most this often while a run reports progress
ATTACH_WAIT_S = 2.0  # how long the loop status waits for a folder's first attach (a loop says hello in ms)


def uri_to_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)).resolve()


class NightlabProtocol(LanguageServerProtocol):
    """Advertises the Nightlab protocol version in capabilities.experimental, so a client can tell a
    server it does not understand."""

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        options = params.initialization_options
        server: Any = self._server  # the NightlabServer this protocol serves
        server.options = dict(options) if isinstance(options, dict) else {}  # e.g. {"inlayHints": false}
        result = yield from super().lsp_initialize(params)
        result.capabilities.experimental = {M.EXPERIMENTAL_CAPABILITY: M.PROTOCOL_VERSION}
        return result


class NightlabServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("nightlab", "0.1.0", protocol_cls=NightlabProtocol)
        self.sessions: dict[Path, Session] = {}
        self.progress_tokens: dict[str, tuple[Session, int]] = {}
        self.options: dict[str, Any] = {}
        self.crash_files: dict[Path, set[str]] = {}  # session root -> uris holding a crash diagnostic
        self.tasks: set[asyncio.Future] = set()  # fire-and-forget work (a cancel, an attach), kept alive
        self.attaching: dict[Path, asyncio.Future] = {}  # session root -> its first attach (see `settled`)
        self._lens_at = 0.0  # when the code lenses were last refreshed for progress

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """Serve over stdio with a reader that survives bad framing and oversized messages (stdio.py)."""
        self._stop_event = threading.Event()
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(
                stdio.serve(stdio.Reader(stdin or sys.stdin.buffer, self.thread_pool), self.protocol, self._stop_event)
            )
        except BrokenPipeError:
            log.warning("the client closed the connection; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    # ------------------------------------------------------------------ sessions

    def add_folder(self, root: Path) -> Session:
        root = root.resolve()
        if root not in self.sessions:
            self.sessions[root] = Session(root, lambda event, r=root: self.on_event(self.sessions[r], event))
        return self.sessions[root]

    def attach(self, session: Session, attaching: Coroutine[Any, Any, None]) -> None:
        """Keep the folder's first attach (a coroutine), for `settled`."""
        self.tasks.add(task := asyncio.ensure_future(attaching))
        task.add_done_callback(self.tasks.discard)
        self.attaching[session.root] = task

    async def settled(self, session: Session) -> None:
        """Wait (ATTACH_WAIT_S at most) for the folder's first attach to a running loop: a client that
        asks for the state at once (a panel after Reload Window) gets the loop's, with its running
        experiments, not the "idle" of a session still connecting."""
        task = self.attaching.get(session.root)
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=ATTACH_WAIT_S)

    def session_for(self, uri_or_path: str | Path | None = None) -> Session:
        if not self.sessions:
            raise LookupError("no workspace folder is open")
        if uri_or_path is None:
            return next(iter(self.sessions.values()))
        path = uri_to_path(uri_or_path) if isinstance(uri_or_path, str) and "://" in uri_or_path else Path(uri_or_path)
        best = max(
            (r for r in self.sessions if path == r or r in path.parents), key=lambda r: len(r.parts), default=None
        )
        if best is None:
            raise LookupError(f"{path} is in no open workspace folder")
        return self.sessions[best]

    def editable_path(self, uri: str) -> tuple[Session, str] | None:
        """(session, workspace-relative path) when the document is an editable file of a workspace."""
        try:
            session = self.session_for(uri)
            rel = uri_to_path(uri).relative_to(session.root).as_posix()
            return (session, rel) if rel in session.settings().files.editable else None
        except (LookupError, ValueError, Exception):
            return None

    def buffer_text(self, session: Session, rel: str) -> str:
        """The open buffer's text when the editor has the file open, else the file on disk."""
        uri = (session.root / rel).as_uri()
        doc = self.workspace.text_documents.get(uri)
        if doc is not None:
            return doc.source
        path = session.root / rel
        return path.read_text(encoding="utf-8") if path.exists() else ""

    # ------------------------------------------------------------------ engine events -> client

    def on_event(self, session: Session, event: dict[str, Any]) -> None:
        try:
            self._on_event(session, event)
        except Exception:  # a client that went away must not stop the loop
            log.exception("forwarding %s failed", event.get("type"))

    def _on_event(self, session: Session, event: dict[str, Any]) -> None:
        kind = event["type"]
        root = str(session.root)
        if kind == ev.STATE:
            state = session.state(event.get("reason", ""))
            state.state = event["state"]
            self.protocol.notify(M.LOOP_STATE, state.to_wire())
        elif kind == ev.EXPERIMENT_STARTED:
            exp = event["experiment"]
            summary = diff_summary(exp["diff"]) if exp.get("diff") else ""
            self.protocol.notify(M.EXPERIMENT_STARTED, experiment_started(exp, summary, root=root).to_wire())
            self._progress_begin(session, exp)
            self._refresh()
        elif kind == ev.PROGRESS:
            payload = progress_payload(event["number"], event["progress"], event.get("stage", "run"), root=root)
            self.protocol.notify(M.EXPERIMENT_PROGRESS, payload.to_wire())
            self._progress_report(session, event["number"], event["progress"])
            if time.monotonic() - self._lens_at > LENS_EVERY_S:  # the summary lens shows the step and loss
                self._refresh()
        elif kind == ev.EXPERIMENT_FINISHED:
            exp = event["experiment"]
            self._progress_end(session, exp)
            summary = diff_summary(exp["diff"]) if exp.get("diff") else ""
            self.protocol.notify(
                M.EXPERIMENT_FINISHED,
                experiment_finished(
                    exp, new_best=exp.get("status") == ExperimentStatus.KEEP, diff_summary=summary, root=root
                ).to_wire(),
            )
            self.publish_crashes(session)
            self._refresh()
        elif kind == ev.CLUSTER:  # the Ray cluster changed (a node, a slot): the state carries it
            self.protocol.notify(M.LOOP_STATE, session.state().to_wire())
        elif kind == ev.MESSAGE:
            level = {"error": types.MessageType.Error, "warning": types.MessageType.Warning}.get(
                str(event.get("level")), types.MessageType.Info
            )
            self.window_log_message(types.LogMessageParams(type=level, message=f"nightlab: {event['text']}"))

    def shown_changed(self, session: Session) -> None:
        """The folder now shows another lineage: its state, diagnostics and lenses to every client."""
        self.protocol.notify(M.LOOP_STATE, session.state().to_wire())
        self.publish_crashes(session)
        self._refresh()

    def _token(self, session: Session, number: int) -> str:
        return f"nightlab/{session.tag or 'main'}/{number}"

    def _progress_begin(self, session: Session, exp: dict) -> None:
        token = self._token(session, exp["number"])
        if token in self.progress_tokens:  # attached again to a loop whose run this server already shows
            return
        self.progress_tokens[token] = (session, exp["number"])
        self.work_done_progress.create(token)
        self.work_done_progress.begin(
            token,
            types.WorkDoneProgressBegin(
                title=f"Nightlab #{exp['number']}", message=exp["description"], percentage=0, cancellable=True
            ),
        )

    def _progress_report(self, session: Session, number: int, p: dict) -> None:
        token = self._token(session, number)
        if token not in self.progress_tokens:
            return
        parts = [f"step {p.get('step', 0)}"]
        if p.get("loss") is not None:
            parts.append(f"loss {p['loss']:.4f}")
        if p.get("tok_per_s"):
            parts.append(f"{p['tok_per_s']:,.0f} tok/s")
        self.work_done_progress.report(
            token,
            types.WorkDoneProgressReport(
                message=" | ".join(parts), percentage=int(100 * (p.get("fraction") or 0)), cancellable=True
            ),
        )

    def _progress_end(self, session: Session, exp: dict) -> None:
        token = self._token(session, exp["number"])
        if self.progress_tokens.pop(token, None) is None:
            return
        metric = f" {exp['metric']:.6f}" if exp.get("metric") is not None else ""
        self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=f"{exp['status']}{metric}"))

    def cancel_progress(self, token: str) -> None:
        entry = self.progress_tokens.get(str(token))
        if entry is not None:
            session, number = entry
            self.tasks.add(task := asyncio.ensure_future(session.cancel_run(number)))
            task.add_done_callback(self.tasks.discard)

    def _refresh(self) -> None:
        self._lens_at = time.monotonic()
        caps = self.client_capabilities.workspace
        if caps and caps.code_lens and caps.code_lens.refresh_support:
            self.workspace_code_lens_refresh(None)
        if caps and caps.inlay_hint and caps.inlay_hint.refresh_support:
            self.workspace_inlay_hint_refresh(None)

    # ------------------------------------------------------------------ diagnostics

    def publish_crashes(self, session: Session) -> None:
        """One diagnostic for the newest crash, on the line where it failed; cleared once a later
        experiment ran to a metric (the crash is superseded)."""
        exps = session.experiments()
        crash = None
        for e in reversed(exps):
            if e.status in (ExperimentStatus.KEEP, ExperimentStatus.DISCARD):
                break
            if e.status == ExperimentStatus.CRASH and e.error:
                crash = e
                break
        settings = session.settings()
        by_uri: dict[str, list[types.Diagnostic]] = {u: [] for u in self.crash_files.get(session.root, set())}
        if crash is not None and crash.commit:
            try:
                _, _, texts = session.files(crash.number)
            except Exception:
                texts = {}
            buffers = {p: self.buffer_text(session, p) for p in settings.files.editable}
            where = crash_location(crash, list(settings.files.editable), texts, buffers)
            if where is not None:
                path, line, message = where
                uri = (session.root / path).as_uri()
                by_uri.setdefault(uri, []).append(
                    types.Diagnostic(
                        range=types.Range(
                            start=types.Position(line=line, character=0),
                            end=types.Position(line=line, character=10_000),
                        ),
                        message=message,
                        severity=types.DiagnosticSeverity.Warning,
                        source="nightlab",
                        code=f"experiment-{crash.number}",
                    )
                )
        self.crash_files[session.root] = {u for u, d in by_uri.items() if d}
        for uri, diagnostics in by_uri.items():
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics))
