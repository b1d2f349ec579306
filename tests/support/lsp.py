"""Helpers for the language-server tests (pytest-lsp clients of the real server over stdio): a stand-in
workspace, a session on it, the notifications a client keeps, and applying the edits it was sent."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient

from support.workspace import CRASHY, git, make_workspace, merge_toml


def standin_workspace(tmp: Path) -> Path:
    """The CRASHY stand-in workspace, one run per candidate (strict), proposals one at a time."""
    ws = make_workspace(tmp, CRASHY)
    (ws / "nightlab.toml").write_text(
        merge_toml((ws / "nightlab.toml").read_text(), '[run]\npropose_ahead = false\n[policy]\nname = "strict"\n')
    )
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "settings")
    return ws


async def start_session(lsp_client: LanguageClient, ws: Path, options: dict | None = None) -> types.InitializeResult:
    """Follow the server's notifications, then initialize it on the workspace `ws`."""
    lsp_client.ws = ws
    listen(lsp_client)
    return await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(),
            root_uri=ws.as_uri(),
            initialization_options=options,
            workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name=ws.name)],
        )
    )


def record_edits(client: LanguageClient) -> None:
    """Apply nothing, keep every workspace/applyEdit the server sends (in `client.edits`), answer applied."""
    client.edits = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        client.edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)


def client_capabilities() -> types.ClientCapabilities:
    return types.ClientCapabilities(
        window=types.WindowClientCapabilities(work_done_progress=True),
        workspace=types.WorkspaceClientCapabilities(apply_edit=True),
    )


def fix_code_action_structuring(client: LanguageClient) -> None:
    """lsprotocol 2025.0.0's client-side converter turns a CodeAction carrying a command into a Command
    (REFERENCE.md); real editors are unaffected. Tell a CodeAction from a Command by its fields."""
    converter = client.protocol._converter

    def hook(obj, _type):
        if obj is None:
            return None
        return [
            converter.structure(
                x,
                types.CodeAction
                if ("kind" in x or "edit" in x or isinstance(x.get("command"), dict))
                else types.Command,
            )
            for x in obj
        ]

    converter.register_structure_hook(types.CodeActionResult, hook)
    converter.register_structure_hook(types.Optional[types.CodeActionResult], hook)


def listen(client: LanguageClient) -> None:
    """Keep what the server notifies: loop states, finished experiments, progress."""
    client.finished, client.states, client.progress = [], [], []

    def as_dict(params):  # pygls gives custom params as namedtuples, nested ones too
        if hasattr(params, "_asdict"):
            return {k: as_dict(v) for k, v in params._asdict().items()}
        if isinstance(params, (list, tuple)):
            return [as_dict(v) for v in params]
        return params

    @client.feature("nightlab/experimentFinished")
    def on_finished(params):
        client.finished.append(as_dict(params))

    @client.feature("nightlab/experimentProgress")
    def on_progress(params):
        client.progress.append(as_dict(params))

    @client.feature("nightlab/loopState")
    def on_state(params):
        state = as_dict(params)
        client.states.append(state)
        stopped = getattr(client, "loop_stopped", None)
        if state["state"] in ("stopped", "errored") and stopped is not None and not stopped.done():
            stopped.set_result(state)


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(pos):
        return offsets[min(pos.line, len(lines))] + pos.character

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: at(e.range.start)] + e.new_text + text[at(e.range.end) :]
    return text


def code_action_params(uri: str) -> types.CodeActionParams:
    return types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0)),
        context=types.CodeActionContext(diagnostics=[]),
    )


async def until(what, timeout: float, every: float = 0.1):
    """`what()`'s first true value, asked every `every` s; fails after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := what():
            return value
        await asyncio.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s")
