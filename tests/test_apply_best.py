"""Apply best and accept of a kept chain's member, end to end: a real loop's ledger in a real git
workspace (the stand-in trainer, a scripted agent), the real language server over stdio (pytest-lsp),
and the three-way merge behind them as a table.

The loop keeps #2 (X 1.0 -> 0.8) and #4 (X 0.8 -> 0.6 and num_steps 1 -> 2, trained on top of #2);
#3 is a discard. The best, #4, holds both kept changes; its own change is only the last."""

import asyncio
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from nightlab.server.changes.hunks import apply_plans
from nightlab.server.changes.merge import merge
from support.agents import run_scripted
from support.lsp import (
    apply_text_edits,
    code_action_params,
    fix_code_action_structuring,
    record_edits,
    standin_workspace,
    start_session,
)
from support.workspace import CRASHY, best_proposal, git, knob

USER_EDIT = ('print("training_seconds: 0.1")', 'print("training_seconds: 0.25")')  # far from the best's hunks
CLASH_EDIT = ("X = 1.0 ", "X = 0.9 ")  # the line the best changes, changed otherwise


def kept_chain_workspace(tmp: Path) -> Path:
    ws = standin_workspace(tmp)
    proposals = [knob("X", "1.0", "0.8"), knob("X", "0.8", "0.9"), best_proposal()]
    engine, _ = run_scripted(ws, proposals, 4)
    statuses = [(e.number, e.status) for e in engine.ledger.experiments()]
    assert statuses == [(1, "keep"), (2, "keep"), (3, "discard"), (4, "keep")], statuses
    return ws


def at(ws: Path, number: int) -> str:
    return git(ws, "show", f"refs/nightlab/main/{number}:train.py") + "\n"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[sys.executable, "-m", "nightlab.server"]))
async def client(lsp_client: LanguageClient, tmp_path_factory):
    ws = await asyncio.to_thread(kept_chain_workspace, tmp_path_factory.mktemp("best"))
    lsp_client.messages = []
    fix_code_action_structuring(lsp_client)

    record_edits(lsp_client)

    await start_session(lsp_client, ws)
    yield
    await lsp_client.shutdown_session()


def open_buffer(client: LanguageClient, text: str) -> str:
    uri = (client.ws / "train.py").as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
        )
    )
    return uri


async def command(client: LanguageClient, name: str, arg: dict | None = None):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[arg or {}]))


def edited(client: LanguageClient, buffer: str, uri: str) -> str:
    """The buffer after the one WorkspaceEdit the server sent (asserting it was one, on one document)."""
    assert len(client.edits) == 1, client.edits
    (change,) = client.edits[0].document_changes
    assert change.text_document.uri == uri and change.text_document.version == 1
    return apply_text_edits(buffer, change.edits)


async def test_apply_best_is_the_best_commit_plus_the_users_own_edit_as_one_edit(client: LanguageClient):
    ws = client.ws
    buffer = CRASHY.replace(*USER_EDIT)
    uri = open_buffer(client, buffer)
    actions = await client.text_document_code_action_async(code_action_params(uri))
    titles = [a.title for a in actions]
    assert "Apply best: #4 (2 kept changes)" in titles, titles
    lenses = await client.text_document_code_lens_async(
        types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    assert any(lens.command.command == "nightlab.experiment.applyBest" for lens in lenses), lenses

    result = await command(client, "nightlab.experiment.applyBest")
    assert edited(client, buffer, uri) == at(ws, 4).replace(*USER_EDIT)
    assert at(ws, 4) != CRASHY and USER_EDIT[1] not in at(ws, 4)  # both sides really changed the file
    assert result["number"] == 4 and result["files"] == ["train.py"]
    assert result["message"].startswith("Apply best: #4 (2 kept changes): #2, #4"), result
    assert (ws / "train.py").read_text() == CRASHY  # the editor owns the buffer: the file is untouched


async def test_a_conflicting_edit_is_named_and_left_out(client: LanguageClient):
    ws = client.ws
    buffer = CRASHY.replace(*CLASH_EDIT)
    uri = open_buffer(client, buffer)
    result = await command(client, "nightlab.experiment.applyBest")
    after = edited(client, buffer, uri)
    assert "X = 0.9 " in after and "X = 0.6" not in after  # the user's line stays; the best's is not forced
    assert after == at(ws, 4).replace("X = 0.6 ", "X = 0.9 ")  # the other hunk applied
    assert (
        "left out (open the diff of #4): hunk 1 of train.py (X = 1.0 -> 0.6) meets your edit at line 2"
        in (result["message"])
    ), result
    assert result["conflicts"] == ["train.py: line 2 (hunk 1), your edit at line 2"], (
        result
    )  # the client opens the diff


async def test_nothing_is_applied_when_every_hunk_conflicts(client: LanguageClient):
    buffer = CRASHY.replace(*CLASH_EDIT).replace('num_steps:        1")', 'num_steps:        3")')
    uri = open_buffer(client, buffer)
    actions = await client.text_document_code_action_async(code_action_params(uri))
    diff = [a for a in actions if a.title.startswith("Open the diff of the best #4")]
    assert diff and diff[0].command.command == "nightlab.experiment.showDiff", [a.title for a in actions]
    records = (client.ws / ".nightlab/main/experiments.jsonl").read_text()
    result = await command(
        client, "nightlab.experiment.applyBest"
    )  # an answer, not an error: the client opens the diff
    assert client.edits == []  # the buffer is not touched
    assert result["files"] == [] and result["conflicts"] == [
        "train.py: line 2 (hunk 1), your edit at line 2",
        "train.py: line 30 (hunk 2), your edit at line 30",
    ], result
    assert result["message"].startswith("nothing applied: every hunk of the best #4 left to take meets your own edits")
    assert "open the diff of #4" in result["message"], result
    assert (client.ws / ".nightlab/main/experiments.jsonl").read_text() == records  # nothing taken: no review


async def test_a_chain_members_action_says_what_it_holds(client: LanguageClient):
    uri = open_buffer(client, at(client.ws, 2))  # the buffer at #4's parent: #4's own change applies
    actions = await client.text_document_code_action_async(code_action_params(uri))
    titles = [a.title for a in actions if a.title.startswith("Apply experiment #4")]
    assert titles and titles[0].endswith("; #4's change alone; #4 was trained on top of #2"), titles


async def test_accept_of_a_chain_member_from_its_parents_version_is_exactly_its_commit(client: LanguageClient):
    buffer = at(client.ws, 2)
    uri = open_buffer(client, buffer)
    result = await command(client, "nightlab.experiment.accept", {"number": 4})
    assert edited(client, buffer, uri) == at(client.ws, 4)
    assert result["files"] == ["train.py"]
    assert result["message"] == "applied experiment #4; #4's change alone; #4 was trained on top of #2", result


async def test_accept_of_a_chain_member_on_the_origin_applies_it_as_trained(client: LanguageClient):
    # the buffer lacks #2, so #4's own hunk (X 0.8 -> 0.6) has nothing to apply to: before, "hunk(s) 1 of
    # train.py no longer apply to your file"; now #4 as trained, with #2 under it, and said so
    buffer = CRASHY.replace(*USER_EDIT)
    uri = open_buffer(client, buffer)
    result = await command(client, "nightlab.experiment.accept", {"number": 4})
    assert edited(client, buffer, uri) == at(client.ws, 4).replace(*USER_EDIT)
    assert "train.py: #4 as trained, with the kept #2 under it" in result["message"], result


# --------------------------------------------------------------------------------------------------
# the merge, as a table: (base, theirs, ours) -> (the buffer after the "apply" plans, states in order)

B = "a\nX = 1\nb\nc\nd\ne\nf\nN = 1\ng\n"
T = "a\nX = 2\nb\nc\nd\ne\nf\nN = 2\ng\n"
CASES = {
    "the user's edit elsewhere stays": ("a\nX = 1\nb\nC\nd\ne\nf\nN = 1\ng\n", "a\nX = 2\nb\nC\nd\ne\nf\nN = 2\ng\n"),
    "an edit on the next line is no conflict": (
        "a\nX = 1\nB\nc\nd\ne\nf\nN = 1\ng\n",
        "a\nX = 2\nB\nc\nd\ne\nf\nN = 2\ng\n",
    ),
    "lines inserted above move the hunks": ("new\nnew\n" + B, "new\nnew\n" + T),
    "the same change is already there": ("a\nX = 2\nb\nc\nd\ne\nf\nN = 1\ng\n", T),
    "a different change is a conflict": ("a\nX = 3\nb\nc\nd\ne\nf\nN = 1\ng\n", "a\nX = 3\nb\nc\nd\ne\nf\nN = 2\ng\n"),
    "CRLF buffers keep CRLF": (B.replace("\n", "\r\n"), T.replace("\n", "\r\n")),
    "no final newline stays so": (B[:-1], T[:-1]),
}
STATES = {
    "the same change is already there": ["applied", "apply"],
    "a different change is a conflict": ["conflict", "apply"],
}


@pytest.mark.parametrize("name", CASES)
def test_merge(name):
    ours, expected = CASES[name]
    m = merge(B, T, ours)
    assert apply_plans(ours, m.plans) == expected
    assert [p.state for p in m.plans] == STATES.get(name, ["apply", "apply"])


def test_an_insertion_where_the_user_inserted_is_a_conflict():
    m = merge("a\nb\n", "a\nnew\nb\n", "a\nmine\nb\n")
    assert [p.state for p in m.plans] == ["conflict"] and m.conflict_lines == {0: 1}
