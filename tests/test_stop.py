"""Stop means stop (issue 12): Ctrl-C, SIGTERM, the engine's and the language server's stop end the loop
within a few seconds in every state, an agent call or a retry's wait in progress included (the call is
cancelled and nothing is recorded for it: no experiment exists before its proposal does, and the next
start asks again); a second Ctrl-C quits at once with 130 and the next start recovers as after kill -9.

The Claude agent talks to tests/support/fake_anthropic.py (hanging answers) or to a port nothing
listens on (connection refused: the agent's own patient retries, 2 s ... 300 s, for up to an hour).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import FileEdit, Proposal
from nightlab.server.editor.session import Session
from nightlab.server.loop.engine import Engine
from nightlab.server.record.ledger import Ledger
from support.fake_anthropic import only_this_key, slow
from support.workspace import STAND_IN, git, make_workspace, merge_toml

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]
KEY = "sk-ant-test-STOP-123"
HANG = 120.0  # an answer that never comes within a test


@pytest.fixture(autouse=True)
def env(monkeypatch):
    only_this_key(monkeypatch, KEY)
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")


def claude_workspace(tmp_path, base_url, extra=""):
    """A committed stand-in workspace whose agent is Claude at `base_url` (no base_url: the environment's
    ANTHROPIC_BASE_URL), with the agent's default retry settings unless `extra` says otherwise."""
    ws = make_workspace(tmp_path, timeout=60)
    toml = '[agent]\nname = "claude"\n' + (f'base_url = "{base_url}"\n' if base_url else "") + extra
    (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), toml))
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "claude settings")
    return ws


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def statuses(ws):
    return [(e.number, str(e.status)) for e in Ledger(ws / ".nightlab" / "main").experiments()]


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------- the engine


async def _until(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


def test_engine_stop_during_an_agent_call_returns_at_once(tmp_path, fake_anthropic):
    """Bug: Engine.stop() never cancelled the agent's call: run() waited for an answer that never came."""
    fake_anthropic.script(slow(HANG), slow(HANG))
    ws = claude_workspace(tmp_path, fake_anthropic.base_url)
    engine = Engine(load_settings(ws, {"agent": "claude"}))
    events: list[dict] = []
    engine.subscribe(events.append)

    async def main() -> float:
        task = asyncio.create_task(engine.run())
        await _until(lambda: fake_anthropic.requests or task.done())  # the baseline ran, Claude is asked
        await asyncio.sleep(0.3)
        assert not task.done(), events
        engine.stop()
        stopped = time.monotonic()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - stopped

    took = asyncio.run(main())
    print(f"engine: run() ended {took:.2f} s after stop()")
    assert took < 2.0, f"run() took {took:.1f} s after stop()"
    assert engine.state == "stopped" and statuses(ws) == [(1, "keep")]  # nothing recorded for the call
    assert len(fake_anthropic.requests) == 1


class EditsThatDoNotApplyThenHangs:
    """An LLM-like agent: its first edit does not apply, the second try (with feedback) never answers."""

    name = "stub"
    accepts_feedback = True

    def __init__(self):
        self.calls = 0

    async def propose(self, ctx):
        self.calls += 1
        if self.calls == 1:
            return Proposal("X 1 -> 0.5", [FileEdit("train.py", "X = 7.0", "X = 0.5")], agent=self.name)
        await asyncio.sleep(HANG)
        raise AssertionError("not cancelled")


def test_engine_stop_while_the_agent_is_asked_again_records_nothing(tmp_path):
    ws = make_workspace(tmp_path)
    agent = EditsThatDoNotApplyThenHangs()
    engine = Engine(load_settings(ws, {}), agent=agent)

    async def main() -> float:
        task = asyncio.create_task(engine.run())
        await _until(lambda: agent.calls == 2 or task.done())
        await asyncio.sleep(0.2)
        assert not task.done()
        engine.stop()
        stopped = time.monotonic()
        await asyncio.wait_for(task, 10)
        return time.monotonic() - stopped

    took = asyncio.run(main())
    print(f"engine, asked again: run() ended {took:.2f} s after stop()")
    assert took < 2.0
    assert engine.state == "stopped" and statuses(ws) == [(1, "keep")]


async def test_session_stop_during_an_agent_call_returns_promptly(tmp_path, fake_anthropic):
    """The language server's stop (which waits up to 60 s for the loop) returns as soon as it ends."""
    fake_anthropic.script(slow(HANG), slow(HANG))
    ws = claude_workspace(tmp_path, fake_anthropic.base_url)
    session = Session(ws, lambda event: None)
    await session.start({"agent": "claude"})
    await _until(lambda: fake_anthropic.requests or not session.running())
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await session.stop()
    took = time.monotonic() - started
    print(f"session: stop() returned after {took:.2f} s")
    # the loop is a process of its own: stop returns once it has exited (its interpreter's end included),
    # not after the 60 s the session would wait for a loop that does not end
    assert took < 10.0 and not session.running(), f"stop took {took:.1f} s"
    assert statuses(ws) == [(1, "keep")]


# ---------------------------------------------------------------------------------------------- the CLI


class Loop:
    """`nightlab run --plain` in a subprocess, its output collected line by line as it comes."""

    def __init__(self, ws, env=None):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*NIGHTLAB, "run", "--plain"],
            cwd=ws,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def ended_within(self, seconds: float) -> float:
        started = time.monotonic()
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
        return time.monotonic() - started

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)


@pytest.mark.parametrize("api", ["hangs", "refused"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_cli_while_claude_never_answers(tmp_path, fake_anthropic, sig, api):
    """Bug: with no route to the API, SIGINT printed "stopping" and the retries went on for an hour;
    SIGTERM was ignored too. "hangs": a request in flight that is never answered; "refused": the agent's
    own retry waits (2 s, 4 s ...) after connection failures."""
    if api == "hangs":
        fake_anthropic.script(*[slow(HANG)] * 3)
        ws = claude_workspace(tmp_path, fake_anthropic.base_url)
        env = {}
        asked = lambda loop: bool(fake_anthropic.requests)  # noqa: E731
    else:  # the environment's ANTHROPIC_BASE_URL, as a user without a route to the API has it
        ws = claude_workspace(tmp_path, None, "max_retries = 0\n")
        env = {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{closed_port()}"}
        asked = lambda loop: "trying again in" in loop.out  # noqa: E731
    loop = Loop(ws, env)
    try:
        assert wait_for(lambda: asked(loop) or loop.proc.poll() is not None), loop.out
        time.sleep(0.5)
        assert loop.proc.poll() is None, loop.out
        loop.proc.send_signal(sig)
        took = loop.ended_within(5.0)
        assert loop.proc.poll() is not None, f"still running 5 s after {sig.name}:\n{loop.out}"
    finally:
        loop.kill()
    print(f"cli, {sig.name}, API {api}: ended {took:.2f} s after the signal")
    assert took < 5.0 and loop.proc.returncode == 0, loop.out
    assert "stopping" in loop.out and "loop stopped: stop requested" in loop.out, loop.out
    assert statuses(ws) == [(1, "keep")]  # the baseline; nothing recorded for the cancelled call
    assert KEY not in loop.out


# a run that ignores SIGTERM while a marker file exists in its TMPDIR: the runner's stop then waits its
# grace period (3 s) before SIGKILL, so the first Ctrl-C takes a while and the second one is seen
STUBBORN = STAND_IN.replace(
    'if MODE == "slow":',
    'if os.path.exists(os.path.join(__import__("tempfile").gettempdir(), "stubborn")):\n'
    "    import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)\n"
    'if MODE == "slow":',
)


def test_a_second_ctrl_c_quits_at_once_and_the_next_start_recovers(tmp_path):
    """Bug: a second SIGINT was ignored like the first. Now it ends the process at once with 130, the
    record stays "running" (as after kill -9) and the next start records it as interrupted and runs it again."""
    ws = make_workspace(tmp_path, STUBBORN, timeout=60)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    (tmp / "stubborn").write_text("")
    loop = Loop(ws, {"TMPDIR": str(tmp)})
    try:
        assert wait_for(lambda: statuses(ws) == [(1, "running")] or loop.proc.poll() is not None), loop.out
        time.sleep(1.0)
        loop.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert loop.proc.poll() is None, loop.out  # the first one waits for the stubborn run's grace period
        loop.proc.send_signal(signal.SIGINT)
        took = loop.ended_within(5.0)
    finally:
        loop.kill()
    print(f"cli, second SIGINT: ended {took:.2f} s after it")
    assert took < 1.0 and loop.proc.returncode == 130, (took, loop.proc.returncode, loop.out)
    assert "stopped at once" in loop.out
    assert statuses(ws) == [(1, "running")]
    (tmp / "stubborn").unlink()
    again = subprocess.run(
        [*NIGHTLAB, "run", "--plain", "--max-experiments", "1"],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert statuses(ws) == [(1, "interrupted"), (2, "keep")]
