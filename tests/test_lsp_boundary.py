"""The language server's typed boundary, through the real server over stdio: the error codes METHODS.md
promises (InvalidParams for a bad argument or an unknown experiment, RequestFailed for a state conflict),
plain messages, no traceback on the server's stderr for either; stop and pause on a loop that is not
running succeed; every start option the VS Code extension sends is accepted; `nightlab/experiments`
answers a page the protocol's own decoder reads."""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import ClientServerConfig, LanguageClient

from nightlab.protocol.types import ExperimentsPage, LoopCommandResult
from support.workspace import STAND_IN, make_workspace

INVALID_PARAMS, REQUEST_FAILED = -32602, -32803
# the server's stderr (pygls logs every error it answers there, with its traceback, unless told not to)
STDERR = Path(tempfile.mkdtemp(prefix="nightlab-lsp-")) / "server.err"
SERVER = ClientServerConfig(server_command=["sh", "-c", f'exec "{sys.executable}" -m nightlab.server 2>>"{STDERR}"'])


def as_dict(value):
    """The test client gives custom answers as namedtuples (nested ones too)."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [as_dict(v) for v in value]
    return value


async def start_server(client: LanguageClient, ws: Path) -> None:
    STDERR.write_text("")
    client.ws, client.states = ws, []
    client.loop_stopped = asyncio.get_running_loop().create_future()

    @client.feature("nightlab/loopState")
    def on_state(params):
        state = as_dict(params)
        client.states.append(state)
        if state["state"] in ("stopped", "errored") and not client.loop_stopped.done():
            client.loop_stopped.set_result(state)

    await client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(
                window=types.WindowClientCapabilities(work_done_progress=True),
                workspace=types.WorkspaceClientCapabilities(apply_edit=True),
            ),
            root_uri=ws.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name=ws.name)],
        )
    )


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient, tmp_path_factory):
    """A server on the stand-in workspace whose runs each sleep 30 s: a started loop stays running."""
    ws = make_workspace(tmp_path_factory.mktemp("boundary"), STAND_IN.replace('MODE = "ok" ', 'MODE = "slow" '), 60)
    await start_server(lsp_client, ws)
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=SERVER)
async def fast_client(lsp_client: LanguageClient, tmp_path_factory):
    """A server on the stand-in workspace whose runs take a moment."""
    await start_server(lsp_client, make_workspace(tmp_path_factory.mktemp("boundary-fast")))
    yield
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, arg=None):
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=name, arguments=None if arg is None else [arg])
    )


async def error_of(call) -> JsonRpcException:
    with pytest.raises(JsonRpcException) as info:
        await call
    return info.value


def assert_plain(exc: JsonRpcException, code: int, words: str) -> None:
    """The error's code, and a message a person reads: no Python class name, no traceback in data."""
    assert exc.code == code, (exc.code, exc.message)
    assert re.search(words, exc.message), exc.message
    assert not re.search(r"[A-Z]\w*(Error|Exception)\b|Traceback|nightlab\.server", exc.message), exc.message
    assert not exc.data, exc.data


def assert_quiet_stderr() -> None:
    text = STDERR.read_text()
    assert "Traceback" not in text and " ERROR " not in text, text


async def test_a_bad_argument_is_invalid_params(client: LanguageClient):
    assert_plain(
        await error_of(command(client, "nightlab.loop.start", {"budgetSeconds": "abc"})),
        INVALID_PARAMS,
        r"budgetSeconds must be a number, got 'abc'",
    )
    assert_plain(
        await error_of(command(client, "nightlab.loop.start", {"budgetMinutes": 3})),
        INVALID_PARAMS,
        r"unknown option\(s\) budgetMinutes; known: .*budgetSeconds",
    )
    assert_plain(
        await error_of(command(client, "nightlab.loop.start", {"budgetSeconds": -1})),
        INVALID_PARAMS,
        r"option budget_seconds: \[budget\] seconds must be a positive number",
    )
    assert_plain(
        await error_of(command(client, "nightlab.loop.start", {"agent": "no-such-agent"})),
        INVALID_PARAMS,
        r"unknown agent 'no-such-agent'",
    )
    assert_plain(
        await error_of(command(client, "nightlab.experiment.accept", {"number": "one"})),
        INVALID_PARAMS,
        r"number must be a whole number, got 'one'",
    )
    assert_plain(await error_of(command(client, "nightlab.experiment.reject", {})), INVALID_PARAMS, r"missing 'number'")
    assert_plain(
        await error_of(client.protocol.send_request_async("nightlab/experiments", {"status": "great"})),
        INVALID_PARAMS,
        r"status: 'great' is not one of",
    )
    assert_plain(
        await error_of(command(client, "nightlab.loop.status", {"root": "/no/such/folder"})),
        INVALID_PARAMS,
        r"/no/such/folder is in no open workspace folder",
    )
    assert_quiet_stderr()


async def test_an_unknown_experiment_is_invalid_params(client: LanguageClient):
    for name in ("nightlab.experiment.accept", "nightlab.experiment.reject", "nightlab.experiment.showDiff"):
        assert_plain(
            await error_of(command(client, name, {"number": 99})),
            INVALID_PARAMS,
            r"there is no experiment #99 on tag main",
        )
    for method in ("nightlab/experimentDiff", "nightlab/experimentCurve"):
        assert_plain(
            await error_of(client.protocol.send_request_async(method, {"number": 99})),
            INVALID_PARAMS,
            r"there is no experiment #99 on tag main",
        )
    assert_quiet_stderr()


async def test_start_while_running_is_request_failed_and_stop_answers_the_state(client: LanguageClient):
    started = await command(client, "nightlab.loop.start", {"agent": "offline", "policy": "strict"})
    assert LoopCommandResult.from_wire(started).tag == "main"
    assert_plain(
        await error_of(command(client, "nightlab.loop.start", {"agent": "offline"})), REQUEST_FAILED, r"already running"
    )
    stopped = LoopCommandResult.from_wire(await command(client, "nightlab.loop.stop"))
    assert stopped.state == "stopped"
    # a loop that is not running: stop and pause answer its state and succeed; resume has nothing to resume
    for name in ("nightlab.loop.stop", "nightlab.loop.pause"):
        again = LoopCommandResult.from_wire(await command(client, name))
        assert again.state == "stopped" and "not running" in again.message, again
    assert_plain(await error_of(command(client, "nightlab.loop.resume")), REQUEST_FAILED, r"not running")
    assert_quiet_stderr()


async def test_stop_and_pause_on_an_idle_loop_succeed(client: LanguageClient):
    for name in ("nightlab.loop.stop", "nightlab.loop.pause"):
        result = LoopCommandResult.from_wire(await command(client, name))
        assert (result.state, result.tag) == ("idle", "main") and "not running" in result.message, result
    for name in ("nightlab.experiment.rerun", "nightlab.baseline.measure"):
        arg = {"number": 1} if name.endswith("rerun") else None
        assert_plain(await error_of(command(client, name, arg)), REQUEST_FAILED, r"not running")
    assert_quiet_stderr()


async def test_the_loop_state_comes_right_after_initialized(client: LanguageClient):
    """METHODS.md: a client that connects learns where the loop stands without asking."""
    for _ in range(100):
        if client.states:
            break
        await asyncio.sleep(0.05)
    assert client.states and client.states[0]["state"] == "idle" and client.states[0]["tag"] == "main", client.states
    assert client.states[0]["root"] == str(client.ws.resolve())


async def test_every_start_option_the_extension_sends_is_accepted(fast_client: LanguageClient):
    """Bug: with nightlab.model set, Start failed with "unknown option(s) model". These are the keys
    client-vscode/src/common/settings.ts's loopOverrides sends (tests/test_overrides.py checks the list)."""
    client = fast_client
    await command(
        client,
        "nightlab.loop.start",
        {
            "agent": "offline",
            "model": "claude-sonnet-4-5",
            "policy": "strict",
            "budgetSeconds": 1,
            "maxExperiments": 2,
            "maxCostUsd": 5,
        },
    )
    state = await asyncio.wait_for(client.loop_stopped, 120)
    assert state["state"] == "stopped" and state["experimentsRun"] == 2, state
    assert_quiet_stderr()


async def test_the_experiments_page_is_one_the_protocol_reads(fast_client: LanguageClient):
    """Bug: nightlab/experiments answered without `offset`, which ExperimentsPage.from_wire refuses."""
    client = fast_client
    await command(client, "nightlab.loop.start", {"agent": "offline", "policy": "strict", "maxExperiments": 2})
    assert (await asyncio.wait_for(client.loop_stopped, 120))["state"] == "stopped"
    page = ExperimentsPage.from_wire(
        as_dict(await client.protocol.send_request_async("nightlab/experiments", {"offset": 1, "limit": 1}))
    )
    assert (page.total, page.offset, [e.number for e in page.experiments]) == (2, 1, [2])
    first = ExperimentsPage.from_wire(as_dict(await client.protocol.send_request_async("nightlab/experiments", {})))
    assert (first.total, first.offset, [e.number for e in first.experiments]) == (2, 0, [1, 2])
    assert_quiet_stderr()


async def test_accept_with_a_path_the_experiment_did_not_change_is_an_error(fast_client: LanguageClient):
    """Bug: accept with a path that matches no file answered "already in your files" and recorded the
    experiment as accepted."""
    client = fast_client
    await command(client, "nightlab.loop.start", {"agent": "offline", "policy": "strict", "maxExperiments": 2})
    assert (await asyncio.wait_for(client.loop_stopped, 120))["state"] == "stopped"
    ledger = client.ws / ".nightlab" / "main" / "experiments.jsonl"
    before = ledger.read_text()
    for path in ("nope.py", "prepare.py"):
        assert_plain(
            await error_of(command(client, "nightlab.experiment.accept", {"number": 2, "path": path})),
            INVALID_PARAMS,
            rf"experiment #2 did not change {path} \(it changed train.py\)",
        )
    assert ledger.read_text() == before  # no review recorded
    assert_quiet_stderr()
