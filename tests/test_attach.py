"""The language server attaches to the loop process instead of running the engine (issue 13, item 2):
a server that goes (Reload Window) leaves the loop and its training running, and the next one attaches to
the same process and sees the experiment in flight finish, recorded once; a loop started from a terminal
is attached to on open and when it starts later; a loop killed with -9 is shown as dead with its log's
last line, and the next Start recovers.

Real parts: the real server over stdio (pytest-lsp), real `nightlab run` processes, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from support.lsp import client_capabilities, listen, start_session, until
from support.workspace import STAND_IN, make_workspace

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "nightlab.server"])

# a run of about STEPS * 0.5 s that reports a loss each step through the events file
STEPPING = STAND_IN.replace(
    'if MODE == "slow":\n    time.sleep(30)',
    """import json
events = os.environ.get("NIGHTLAB_EVENTS")
for step in range(STEPS):
    if events:
        with open(events, "a") as f:
            f.write(json.dumps({"event": "step", "step": step, "elapsed_s": step * 0.5,
                                "loss": 3.0 - step * 0.1, "progress": step / STEPS}) + "\\n")
    time.sleep(0.5)""",
).replace('MODE = "ok" ', 'STEPS = 16\nMODE = "ok" ')


def stepping_workspace(tmp: Path, steps: int = 16) -> Path:
    return make_workspace(tmp, STEPPING.replace("STEPS = 16", f"STEPS = {steps}"), 120)


@pytest_lsp.fixture(config=SERVER)
async def first(lsp_client: LanguageClient):
    yield
    if not getattr(lsp_client, "shut_down", False):
        await shut(lsp_client)


@pytest_lsp.fixture(config=SERVER)
async def second(lsp_client: LanguageClient):
    yield
    await shut(lsp_client)


async def shut(client: LanguageClient) -> None:
    """Shut the server down; one a failed test never initialized does not answer, and is killed."""
    try:
        await asyncio.wait_for(client.shutdown_session(), 30)
    except asyncio.TimeoutError:
        pass


def with_pid(client: LanguageClient) -> dict | None:
    return next((s for s in reversed(client.states) if s.get("pid")), None)


def records(ws: Path) -> list[dict]:
    return [json.loads(line) for line in (ws / ".nightlab/main/experiments.jsonl").read_text().splitlines() if line]


async def start(client: LanguageClient, **args) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="nightlab.loop.start", arguments=[{"agent": "offline", "policy": "strict", **args}]
        )
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return stat[0] != "Z"


async def test_a_reloaded_server_attaches_to_the_same_loop_and_sees_its_run_finish(
    first: LanguageClient, second: LanguageClient, tmp_path
):
    ws = stepping_workspace(tmp_path)
    await start_session(first, ws)
    await start(first, maxExperiments=1)
    await until(lambda: [p for p in first.progress if p["number"] == 1], 30)
    pid = with_pid(first)["pid"]
    training = int((ws / ".nightlab/runs/main/1/pgid").read_text())
    await first.shutdown_session()  # Reload Window: the server goes
    first.shut_down = True
    assert alive(pid) and alive(training), "the loop and its training go on without the editor"

    reloaded = time.monotonic()
    await start_session(second, ws)
    state = await until(lambda: with_pid(second), 10)
    assert state["pid"] == pid and state["running"] == [1] and state["state"] == "running", state
    await until(lambda: [p for p in second.progress if p["number"] == 1], 10)
    print(f"attached and following #1 {time.monotonic() - reloaded:.1f} s after the new server started")
    done = await until(lambda: [f for f in second.finished if f["experiment"]["number"] == 1], 60)
    assert done[0]["verdict"] == "keep", done[0]
    finals = [r for r in records(ws) if r["number"] == 1 and r["status"] != "running"]
    assert [r["status"] for r in finals] == ["keep"], "recorded once, not as interrupted"


async def test_stop_loop_on_exit_stops_the_loop_with_the_server(first: LanguageClient, tmp_path):
    ws = stepping_workspace(tmp_path, steps=100)
    await start_session(first, ws, {"stopLoopOnExit": True})
    await start(first, maxExperiments=2)
    await until(lambda: [p for p in first.progress if p["number"] == 1], 30)
    pid, training = with_pid(first)["pid"], int((ws / ".nightlab/runs/main/1/pgid").read_text())
    await first.shutdown_session()
    first.shut_down = True
    assert not alive(pid) and not alive(training)
    assert records(ws)[-1]["status"] == "interrupted" and records(ws)[-1]["number"] == 1


def detach(ws: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nightlab.server.cli", "run", "--detach", "--workspace", str(ws), "--agent", "offline"]
    return subprocess.run([*cmd, "--policy", "strict", *args], capture_output=True, text=True, timeout=90)


def cli(ws: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nightlab.server.cli", *args, "--workspace", str(ws)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_loop_started_from_a_terminal_is_attached_on_open_and_stopped_from_the_editor(
    first: LanguageClient, tmp_path
):
    ws = stepping_workspace(tmp_path, steps=100)
    out = detach(ws)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("pid ")[1].split(",")[0])
    await start_session(first, ws)
    state = await until(lambda: with_pid(first), 10)
    assert state["pid"] == pid and state["budget"] and state["policy"] == "strict", state
    await until(lambda: [p for p in first.progress if p["number"] == 1], 30)  # its live progress too
    result = await first.workspace_execute_command_async(
        types.ExecuteCommandParams(command="nightlab.loop.stop", arguments=[{}])
    )
    assert result["state"] == "stopped", result
    assert not alive(pid)
    status = cli(ws, "status")
    assert "not running" in status.stdout + status.stderr, status.stdout + status.stderr


async def test_a_loop_started_later_from_a_terminal_is_attached_to(first: LanguageClient, tmp_path):
    ws = stepping_workspace(tmp_path, steps=100)
    await start_session(first, ws)
    await asyncio.sleep(0.5)
    assert with_pid(first) is None
    out = detach(ws)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.split("pid ")[1].split(",")[0])
    state = await until(lambda: with_pid(first), 10)
    assert state["pid"] == pid
    assert cli(ws, "stop").returncode == 0
    stopped = await until(lambda: [s for s in first.states if s["state"] == "stopped" and not s.get("pid")], 30)
    assert not stopped[-1]["died"]


async def test_a_killed_loop_is_shown_dead_with_its_log_and_the_next_start_recovers(first: LanguageClient, tmp_path):
    ws = stepping_workspace(tmp_path, steps=12)
    await start_session(first, ws)
    await start(first, maxExperiments=2)
    await until(lambda: [p for p in first.progress if p["number"] == 1], 30)
    pid = with_pid(first)["pid"]
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    dead = await until(lambda: [s for s in first.states if s.get("died")], 10)
    print(f"shown dead {time.monotonic() - killed:.1f} s after kill -9: {dead[-1]['reason']}")
    assert dead[-1]["state"] == "errored" and f"pid {pid}" in dead[-1]["reason"] and "died" in dead[-1]["reason"]
    assert "loop.log" in dead[-1]["reason"], "with the last lines of its log"

    await start(first, maxExperiments=1)
    await until(lambda: [s for s in first.states if s["state"] == "stopped"], 90)
    statuses = [(r["number"], r["status"]) for r in records(ws) if r["status"] != "running"]
    assert statuses[0] == (1, "interrupted"), statuses  # recovered as today: the killed run is interrupted
    assert any(s == "keep" for _, s in statuses[1:]), statuses


@pytest.mark.parametrize("flag", ["stop", "pause"])
def test_control_commands_of_an_idle_folder_say_none_runs(tmp_path, flag):
    ws = stepping_workspace(tmp_path)
    out = cli(ws, flag)
    assert out.returncode != 0 and "no loop is running" in out.stdout + out.stderr


def test_a_detached_loop_started_in_the_workspace_does_not_import_a_nightlab_folder_there(tmp_path):
    """`python -m nightlab...` run in a folder puts that folder first on sys.path: a `nightlab/` folder in
    the workspace (the language server's Start launches the loop there) must not be what runs."""
    ws = stepping_workspace(tmp_path, steps=2)
    shadow = tmp_path / "SHADOWED"
    (ws / "nightlab").mkdir()
    (ws / "nightlab" / "__init__.py").write_text(f"open({str(shadow)!r}, 'w').write('workspace code ran')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}
    launcher = (
        "from pathlib import Path; from nightlab.server.control.launch import launch; "
        f"print(launch(Path({str(ws / '.nightlab/main')!r}), "
        "['run', '--workspace', '.', '--agent', 'offline', '--max-experiments', '1'], "
        f"cwd={str(ws)!r}))"
    )
    out = subprocess.run([sys.executable, "-P", "-c", launcher], capture_output=True, text=True, timeout=90, env=env)
    assert out.returncode == 0, out.stderr
    assert not shadow.exists(), "the workspace's nightlab/ folder was imported by the loop"


async def test_code_lenses_are_refreshed_while_the_first_run_trains(first: LanguageClient, tmp_path):
    """The summary lens shows the running experiment's progress: the server asks the editor to refresh its
    lenses when a run starts and as it reports, not only once it finished."""
    ws = stepping_workspace(tmp_path, steps=12)
    refreshes: list[float] = []

    @first.feature("workspace/codeLens/refresh")
    def on_refresh(_params):
        refreshes.append(time.monotonic())

    capabilities = client_capabilities()
    capabilities.workspace.code_lens = types.CodeLensWorkspaceClientCapabilities(refresh_support=True)
    first.ws = ws
    listen(first)
    await first.initialize_session(
        types.InitializeParams(
            capabilities=capabilities,
            root_uri=ws.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=ws.as_uri(), name=ws.name)],
        )
    )
    await start(first, maxExperiments=1)
    await until(lambda: [p for p in first.progress if p["number"] == 1 and p["step"] >= 8], 60)
    assert not first.finished, "the first run is still training"
    assert len(refreshes) >= 2, refreshes  # at its start, and again as it reported


async def test_each_folder_of_a_multi_root_workspace_has_its_own_loop(first: LanguageClient, tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    a, b, c = (stepping_workspace(tmp_path / name, steps=100) for name in ("a", "b", "c"))
    listen(first)
    await first.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(),
            root_uri=a.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=w.as_uri(), name=w.parent.name) for w in (a, b)],
        )
    )
    for ws in (a, b):
        await start(first, maxExperiments=1, root=str(ws))
    pids = {}
    for ws in (a, b):
        state = await until(
            lambda ws=ws: next((s for s in first.states if s["root"] == str(ws) and s.get("pid")), None), 15
        )
        pids[ws] = state["pid"]
    assert pids[a] != pids[b], "one loop process per folder"
    out = detach(c)  # a folder added later, whose loop runs already
    assert out.returncode == 0, out.stderr
    first.workspace_did_change_workspace_folders(
        types.DidChangeWorkspaceFoldersParams(
            event=types.WorkspaceFoldersChangeEvent(added=[types.WorkspaceFolder(uri=c.as_uri(), name="c")], removed=[])
        )
    )
    state = await until(lambda: next((s for s in first.states if s["root"] == str(c) and s.get("pid")), None), 15)
    assert state["pid"] not in pids.values()
    for ws in (a, b, c):
        result = await first.workspace_execute_command_async(
            types.ExecuteCommandParams(command="nightlab.loop.stop", arguments=[{"root": str(ws)}])
        )
        assert result["state"] == "stopped", (ws, result)
