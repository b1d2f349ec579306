"""The warm start of the language server (server/lsp/warm.py): `python -m nightlab.server --warm` runs the
server itself the first time and leaves a warm process behind; the next launch is served by a server the
warm process forks, with the launcher's environment (not the warm process's: the API key never sits
there), its working directory and stdio, and ends with it; changed code is never served warm.

Real parts: real processes, the real server answering `initialize` over the launcher's stdio."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nightlab.server.lsp import warm
from support.workspace import make_workspace

pytestmark = pytest.mark.timeout(120)


def _warm_pids() -> list[int]:
    """The warm processes of this interpreter (their forked servers share the command line)."""
    out = subprocess.run(["pgrep", "-f", "nightlab.server.lsp.warm"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _end_warm() -> None:
    for pid in _warm_pids():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _until(lambda: not _warm_pids())


@pytest.fixture
def no_warm():
    _end_warm()  # one a test or an editor left (the end-to-end test's) would answer instead
    yield
    _end_warm()


def _left_by(launcher: subprocess.Popen) -> int:
    """The warm process a cold launcher started (its child until it ends), once its socket is up."""
    pid = _until(lambda: [int(p) for p in _children(launcher.pid) if int(p) in _warm_pids()])[0]
    _until(lambda: warm.socket_path().exists())
    return pid


def _initialize(ws: Path, env: dict) -> tuple[subprocess.Popen, dict]:
    """Launch with --warm, send initialize, read its answer; (the launcher, the answer)."""
    p = subprocess.Popen(
        [sys.executable, "-m", "nightlab.server", "--warm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ws,
    )
    msg = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"processId": None, "capabilities": {},
           "rootUri": ws.as_uri(), "workspaceFolders": [{"uri": ws.as_uri(), "name": "ws"}]}}  # fmt: skip
    body = json.dumps(msg).encode()
    p.stdin.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    p.stdin.flush()
    header = b""
    while not header.endswith(b"\r\n\r\n"):
        header += p.stdout.read(1)
    length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    return p, json.loads(p.stdout.read(length))


def _gone(pid: int) -> bool:
    """Ended: no process, or a zombie (an orphan's new parent may be this test process: Ray's driver,
    started by earlier tests in the same process, makes it a subreaper, and it reaps nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _children(pid: int) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()


def _until(what, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := what():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:.0f} s")


def test_a_second_launch_is_served_warm_with_its_own_environment(tmp_path, no_warm):
    ws = make_workspace(tmp_path)
    env = {**os.environ, "NIGHTLAB_LSP_LOG": "WARNING", "ANTHROPIC_API_KEY": "sk-ant-test-" + "k" * 20}
    cold, answer = _initialize(ws, env)
    assert answer["result"]["capabilities"]["experimental"]["nightlabProtocol"] >= 1
    zygote = _left_by(cold)
    assert b"ANTHROPIC_API_KEY" not in Path(f"/proc/{zygote}/environ").read_bytes()  # no secret held there
    cold.stdin.close()
    assert cold.wait(30) == 0

    # the warm one: a server forked by the warm process, in the launcher's folder, with its environment
    # (NIGHTLAB_LSP_LOG=DEBUG here: the server's debug lines on stderr say it read the launcher's)
    served, answer = _initialize(ws, {**env, "NIGHTLAB_LSP_LOG": "DEBUG"})
    assert answer["result"]["capabilities"]["experimental"]["nightlabProtocol"] >= 1
    children = _children(zygote)
    assert len(children) == 1, children
    server = int(children[0])
    assert os.readlink(f"/proc/{server}/cwd") == str(ws)
    served.stdin.close()  # the editor went: the server ends, and the launcher with its exit code
    assert served.wait(30) == 0
    assert "DEBUG" in served.stderr.read().decode()
    _until(lambda: _gone(server))

    # a SIGTERM to the launcher (vscode-languageclient's stop when the server does not exit) ends the server
    term, _ = _initialize(ws, env)
    server = int(
        _until(lambda: subprocess.run(["pgrep", "-P", str(zygote)], capture_output=True, text=True).stdout.split())[0]
    )
    term.send_signal(signal.SIGTERM)
    term.wait(30)
    _until(lambda: _gone(server))


def test_changed_code_is_never_served_warm(tmp_path, no_warm, monkeypatch):
    ws = make_workspace(tmp_path)
    first, _ = _initialize(ws, dict(os.environ))
    old = _left_by(first)
    first.stdin.close()
    first.wait(30)
    # the launcher's stamp differs from the warm process's (an upgrade, an edited module): it runs cold,
    # the stale warm process ends, a new one takes its place
    module = Path(warm.__file__)
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1_000_000))
    again, answer = _initialize(ws, dict(os.environ))
    assert "result" in answer
    _until(lambda: _gone(old), 70)  # at once; at most 30 s (its next look) once a newer one has its socket
    # served cold: the launcher is the server, and it started the new warm process (its own child)
    started = subprocess.run(["pgrep", "-P", str(again.pid)], capture_output=True, text=True).stdout.split()
    assert [p for p in started if int(p) in _warm_pids()] == started and len(started) == 1, started
    again.stdin.close()
    again.wait(30)
    _until(lambda: warm.socket_path().exists())
