"""One loop process per tag with a control endpoint (issue 13): `nightlab run --detach`, then `status`,
`pause`, `resume`, `attach` and `stop` from other processes, against a REAL loop process (the stand-in
trainer, the offline agent); two clients at once, a malformed line, an oversized one; `kill -9` of the
loop: the stale socket cleaned, every command says it died with its log's last line, the next run
recovers. In process: a client that reads too slowly is dropped and the loop never waits; a workspace
path too long for a socket. And the message encoding (protocol/control.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from nightlab.protocol import control as c
from nightlab.server.control import paths
from nightlab.server.control.client import connect_loop, process_gone
from nightlab.server.record.ledger import Ledger
from support.workspace import STAND_IN, make_workspace

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]
# every run naps for the seconds in $TMPDIR/nap (the runner passes TMPDIR): long enough to catch the
# loop mid-run; no UPPER_CASE constant, so the offline agent never turns it
NAP = (
    'import tempfile\n_nap = os.path.join(tempfile.gettempdir(), "nap")\n'
    "time.sleep(float(open(_nap).read()) if os.path.exists(_nap) else 0)\n"
)


# ---------------------------------------------------------------------------- the messages


@pytest.mark.parametrize("kind", list(c.MESSAGES))
def test_every_message_round_trips_through_its_line(kind):
    message = c.EXAMPLES[kind]
    line = c.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["type"] == kind
    assert c.decode(line) == message


@pytest.mark.parametrize(
    "line, code, ident",
    [
        (b"not json\n", "malformed", None),
        (b"[1, 2]\n", "malformed", None),
        (b'{"id": 3, "command": "pause"}\n', "unknownType", 3),
        (b'{"type": "teleport", "id": 4}\n', "unknownType", 4),
        (b'{"type": "command", "id": 5, "command": "fly"}\n', "invalid", 5),
        (b'{"type": "command", "id": 6, "command": "rerun", "number": "seven"}\n', "invalid", 6),
        (b'{"type": "command", "command": "pause"}\n', "invalid", None),
        (b"\xff\xfe\n", "malformed", None),
        (b'{"type": "command", "id": 1, "command": "' + b"x" * c.MAX_LINE + b'"}\n', "tooLarge", None),
    ],
)
def test_a_line_that_is_no_message_is_a_control_error(line, code, ident):
    with pytest.raises(c.ControlError) as caught:
        c.decode(line)
    assert (caught.value.code, caught.value.id) == (code, ident), str(caught.value)


def test_nan_and_infinity_travel_as_null():
    line = c.encode(c.ControlEvent({"type": "experimentFinished", "experiment": {"metric": float("nan")}}))
    assert json.loads(line)["event"]["experiment"]["metric"] is None
    assert b"NaN" not in line


def test_unknown_fields_are_ignored_so_an_older_client_reads_a_newer_loop():
    line = b'{"type": "goodbye", "code": "loopEnded", "message": "bye", "retryAfterS": 3}\n'
    assert c.decode(line) == c.ControlGoodbye("loopEnded", "bye")


# ---------------------------------------------------------------------------- where the socket is


def test_a_socket_path_too_long_falls_back_to_a_private_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # gettempdir() caches what it found
    short = tmp_path / ".nightlab" / "main"
    assert paths.socket_path(short) == short / "loop.sock"
    deep = tmp_path / ("d" * 100) / ".nightlab" / "main"
    path = paths.socket_path(deep)
    assert len(os.fsencode(path)) <= paths.SUN_PATH_MAX and path.parent == tmp_path / f"nightlab-{os.getuid()}"
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert paths.socket_path(deep) == path != paths.socket_path(tmp_path / ("e" * 100) / ".nightlab" / "main")


def test_a_private_folder_that_others_may_enter_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # gettempdir() caches what it found
    (tmp_path / f"nightlab-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(tmp_path / f"nightlab-{os.getuid()}", 0o777)
    with pytest.raises(OSError, match="not a private folder"):
        paths.socket_path(tmp_path / ("d" * 100) / ".nightlab" / "main")


# ---------------------------------------------------------------------------- in process: slow clients


def _engine(ws):
    from nightlab.server.core.settings import load_settings
    from nightlab.server.loop.engine import Engine

    return Engine(load_settings(ws, {}))


async def test_a_client_that_reads_too_slowly_is_dropped_and_the_loop_never_waits(tmp_path):
    from nightlab.server.control.server import QUEUE_LINES, ControlServer

    engine = _engine(make_workspace(tmp_path))
    server = ControlServer(engine)
    path = await server.start()
    slow_reader, slow_writer = await asyncio.open_unix_connection(os.fspath(path), limit=c.MAX_LINE + 1)
    conn = await connect_loop(engine.ledger.dir)  # a client that keeps up
    got: list[dict] = []

    async def follow():
        async for event in conn.events():
            got.append(event)

    following = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    assert len(server.clients) == 2
    count, took = 3 * QUEUE_LINES, []
    for i in range(count):  # 10 KB each: far past what the kernel buffers for a client that never reads
        started = time.perf_counter()
        engine.message(f"{i} " + "x" * 10_000)
        took.append(time.perf_counter() - started)
        if i % 20 == 0:
            await asyncio.sleep(0.002)  # the writers run between the engine's steps, as in a real loop
    end = time.monotonic() + 30
    while len(got) < count and time.monotonic() < end:
        await asyncio.sleep(0.05)
    assert len(got) == count, f"the client that keeps up got {len(got)} of {count} events"
    took.sort()
    worst = took[-1]
    median, p99 = took[len(took) // 2] * 1e3, took[-len(took) // 100] * 1e3
    print(f"emit with a stuck client: median {median:.3f} ms, p99 {p99:.3f} ms, slowest {worst * 1e3:.2f} ms")
    assert worst < 0.05 and len(server.clients) == 1  # the stuck one was dropped
    lines = []
    while line := await slow_reader.readline():
        lines.append(c.decode(line))
    assert isinstance(lines[-1], c.ControlGoodbye) and lines[-1].code == "tooSlow", lines[-1]
    assert "reads too slowly" in lines[-1].message
    await server.close()
    await asyncio.wait_for(following, 5)
    assert conn.ending is not None and conn.ending.code == "loopEnded"
    assert not path.exists() and paths.read_info(engine.ledger.dir) is None  # a clean end leaves nothing
    slow_writer.close()


async def test_events_too_big_for_a_line_are_slimmed_and_the_hello_stays_one_line(tmp_path):
    """A 2 MB hypothesis (the agent's text) or diff must not make a line no client can read."""
    from nightlab.server.control.server import ControlServer

    engine = _engine(make_workspace(tmp_path))
    server = ControlServer(engine)
    await server.start()
    big = {"number": 3, "description": "d", "hypothesis": "h" * 2_000_000, "diff": "+x\n" * 500_000, "kind": "change"}
    engine.emit("experimentStarted", experiment=big)
    for i in range(c.RECENT_EVENTS):  # the recent events alone are more than a line
        engine.emit("experimentFinished", experiment={"number": 100 + i, "diff": "y" * 20_000})
    engine.emit("experimentStarted", experiment={**big, "number": 4})
    conn = await connect_loop(engine.ledger.dir)  # its reader refuses any line over MAX_LINE
    [running] = [r for r in conn.hello.loop.running if r.number == 4] or [None]
    assert running is not None and "diff" not in running.experiment and len(running.experiment["hypothesis"]) < 5000
    assert 0 < len(conn.hello.events) < c.RECENT_EVENTS and conn.hello.events[-1]["experiment"]["number"] == 4
    engine.emit("experimentFinished", experiment={**big, "number": 4, "status": "keep"})
    event = await asyncio.wait_for(anext(conn.events()), 5)
    assert event["truncated"] and event["experiment"]["status"] == "keep" and "diff" not in event["experiment"]
    assert big["diff"] and len(big["hypothesis"]) == 2_000_000  # the engine's own dicts are left whole
    await conn.close()
    await server.close()


async def test_a_workspace_too_deep_for_a_socket_path_is_served_from_the_short_one(tmp_path, monkeypatch):
    from nightlab.server.control.server import ControlServer

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # gettempdir() caches what it found
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    engine = _engine(make_workspace(deep))
    server = ControlServer(engine)
    path = await server.start()
    assert path is not None and not str(path).startswith(str(deep))
    assert paths.read_info(engine.ledger.dir).socket == str(path)
    assert path.stat().st_mode & 0o777 == 0o600
    conn = await connect_loop(engine.ledger.dir, "main")
    assert conn.hello.loop.tag == "main" and conn.hello.loop.pid == os.getpid()
    reply = await conn.command("status")
    assert reply.loop is not None and reply.loop.settings.budget == "1 s"
    await conn.close()
    await server.close()
    assert not path.exists()


# ---------------------------------------------------------------------------- a real loop process


@pytest.fixture
def ws(tmp_path):
    """A workspace whose runs nap for $TMPDIR/nap seconds; the returned env points the loop at it."""
    ws = make_workspace(tmp_path, STAND_IN.replace('MODE = "ok"', 'MODE = "ok"\n' + NAP, 1), timeout=60)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "nap").write_text("0.6")
    return ws


def env_for(ws) -> dict:
    return {**os.environ, "TMPDIR": str(ws.parent / "tmp"), "PYTHONUNBUFFERED": "1"}


def cli(ws, *args, timeout=90):
    return subprocess.run([*NIGHTLAB, *args], cwd=ws, capture_output=True, text=True, timeout=timeout, env=env_for(ws))


def ledger_dir(ws) -> Path:
    return ws / ".nightlab" / "main"


def wait_for(predicate, timeout=60.0, every=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return False


def detach(ws, *flags) -> int:
    started = time.monotonic()
    proc = cli(ws, "run", "--detach", *flags)
    took = time.monotonic() - started
    print(f"run --detach returned in {took:.2f} s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pid = int(re.search(r"pid (\d+)", proc.stdout).group(1))
    assert "nightlab attach" in proc.stdout and "nightlab stop" in proc.stdout, proc.stdout
    assert paths.read_info(ledger_dir(ws)).pid == pid and not process_gone(pid)
    return pid


class Raw:
    """A client speaking the socket's lines by hand."""

    def __init__(self, ws):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(paths.read_info(ledger_dir(ws)).socket)
        self.file = self.sock.makefile("rb")
        self.hello = c.decode(self.file.readline())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next(self, kind: type):
        """The next message of this kind (events before it are skipped)."""
        while line := self.file.readline():
            message = c.decode(line)
            if isinstance(message, kind):
                return message
        raise EOFError("the loop closed the connection")

    def close(self):
        self.file.close()
        self.sock.close()


def final_numbers(ws) -> list[int]:
    return [e.number for e in Ledger(ledger_dir(ws)).experiments()]


def test_detach_status_pause_resume_attach_stop(ws):
    pid = detach(ws)
    try:
        status = cli(ws, "status")
        assert status.returncode == 0 and f"loop: running (pid {pid})" in status.stdout, status.stdout
        assert "loop state:" in status.stdout and "running: #" in status.stdout, status.stdout

        pause = cli(ws, "pause")
        assert pause.returncode == 0 and f"loop (pid {pid})" in pause.stdout and "pausing" in pause.stdout
        assert wait_for(lambda: "loop state: paused" in cli(ws, "status").stdout, 60), cli(ws, "status").stdout
        paused = len(final_numbers(ws))
        time.sleep(2.0)  # three naps: no new experiment starts while paused
        assert len(final_numbers(ws)) == paused
        assert cli(ws, "resume").returncode == 0
        assert wait_for(lambda: len(final_numbers(ws)) > paused, 60)

        attach = subprocess.Popen(
            [*NIGHTLAB, "attach"], cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for(ws)
        )
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(attach.stdout), daemon=True).start()
        assert wait_for(lambda: any(" started: " in line for line in lines), 60), lines
        assert any(f"attached to the loop (pid {pid})" in line for line in lines), lines
        attach.send_signal(signal.SIGINT)
        assert attach.wait(20) == 0, lines
        time.sleep(0.2)
        assert any(f"detached; the loop (pid {pid}) goes on" in line for line in lines), lines
        assert not process_gone(pid)  # detaching leaves the loop running

        started = time.monotonic()
        stop = cli(ws, "stop")
        print(f"stop returned {time.monotonic() - started:.2f} s after it was sent")
        assert stop.returncode == 0 and f"the loop (pid {pid}) has exited" in stop.stdout, stop.stdout + stop.stderr
        assert process_gone(pid)
    finally:
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
    numbers = final_numbers(ws)
    assert numbers == list(range(1, len(numbers) + 1))  # each experiment once
    assert [e.status for e in Ledger(ledger_dir(ws)).experiments()].count("running") == 0
    assert not paths.socket_path(ledger_dir(ws)).exists() and paths.read_info(ledger_dir(ws)) is None
    after = cli(ws, "status")
    assert "loop: not running" in after.stdout and "died" not in after.stdout, after.stdout
    again = cli(ws, "stop")
    assert again.returncode == 1 and "no loop is running on tag main" in again.stderr, again.stderr


def test_two_clients_a_malformed_line_and_an_oversized_one(ws):
    pid = detach(ws)
    one, two = Raw(ws), Raw(ws)
    try:
        assert one.hello.loop.pid == two.hello.loop.pid == pid and one.hello.protocol == c.CONTROL_VERSION
        assert one.hello.loop.settings.budget == "1 s" and one.hello.loop.settings.agent == "offline"
        assert one.hello.events, "the hello carries the recent events"
        for raw in (one, two):  # both follow the same stream
            event = raw.next(c.ControlEvent).event
            assert event["type"] in ("state", "experimentStarted", "progress", "experimentFinished", "message")

        one.send(b"this is not json\n")
        error = one.next(c.ControlErrorReply)
        assert error.code == "malformed" and error.id is None
        one.send(b'{"type": "command", "id": 7, "command": "fly"}\n')
        error = one.next(c.ControlErrorReply)
        assert (error.id, error.code) == (7, "invalid") and "fly" in error.message
        one.send(b'{"type": "command", "id": 8, "command": "rerun", "number": 999}\n')
        error = one.next(c.ControlErrorReply)
        assert (error.id, error.code) == (8, "invalid") and "no experiment #999" in error.message
        one.send(c.encode(c.ControlCommand("s1", "status")))
        reply = one.next(c.ControlReply)
        assert reply.id == "s1" and reply.loop is not None and reply.loop.pid == pid

        two.send(b'{"type": "command", "id": 1, "command": "status", "pad": "' + b"x" * (c.MAX_LINE + 10) + b'"}\n')
        assert two.next(c.ControlErrorReply).code == "tooLarge"
        assert two.next(c.ControlGoodbye).code == "tooLarge"
        with pytest.raises(EOFError):
            two.next(c.ControlEvent)  # closed: what follows a line over the limit cannot be framed
        one.send(c.encode(c.ControlCommand(2, "baseline")))
        assert "baseline" in one.next(c.ControlReply).message  # the loop and the other client go on
        assert not process_gone(pid)
    finally:
        one.close()
        two.close()
        stop = cli(ws, "stop")
        assert stop.returncode == 0, stop.stdout + stop.stderr


def test_kill_9_of_the_loop_is_said_to_be_a_death_and_the_next_run_recovers(ws):
    pid = detach(ws)
    attach = subprocess.Popen(
        [*NIGHTLAB, "attach"], cwd=ws, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(ws)
    )
    running = lambda: any(e.status == "running" for e in Ledger(ledger_dir(ws)).experiments())  # noqa: E731
    assert wait_for(lambda: running() and len(final_numbers(ws)) >= 2, 60)
    last_log_line = paths.log_tail(ledger_dir(ws) / "loop.log", 1)[0]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: process_gone(pid), 10)

    out, err = attach.communicate(timeout=30)
    assert attach.returncode == 1, out + err
    assert f"the loop (pid {pid}) is not running; it died without stopping" in err, err
    sock = Path(paths.read_info(ledger_dir(ws)).socket)
    assert not sock.exists(), "the stale socket is removed"
    for command in ("pause", "resume", "stop", "attach"):
        proc = cli(ws, command)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        said = " ".join(proc.stderr.split())  # rich wraps a long line
        assert f"the loop (pid {pid}) is not running; it died without stopping" in said, (command, said)
        assert "last lines of loop.log" in said and " ".join(last_log_line.split()) in said, (command, said)
    status = cli(ws, "status")
    assert "loop: not running" in status.stdout and f"the loop (pid {pid}) is not running" in status.stdout

    interrupted = [e.number for e in Ledger(ledger_dir(ws)).experiments() if e.status == "running"]
    again = cli(ws, "run", "--max-experiments", "1", "--plain")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"experiment {interrupted[0]} was interrupted; running it again" in again.stdout, again.stdout
    exps = Ledger(ledger_dir(ws)).experiments()
    assert [e.status for e in exps if e.number in interrupted] == ["interrupted"] and exps[-1].status != "running"
    assert paths.read_info(ledger_dir(ws)) is None  # the new run ended cleanly: no death left to report
    assert "died" not in cli(ws, "status").stdout


def test_attach_says_when_the_loop_ends(ws):
    pid = detach(ws, "--max-experiments", "2")
    attach = subprocess.run([*NIGHTLAB, "attach"], cwd=ws, capture_output=True, text=True, timeout=90, env=env_for(ws))
    assert attach.returncode == 0, attach.stdout + attach.stderr
    assert "the loop stopped: limit reached" in attach.stdout, attach.stdout
    assert wait_for(lambda: process_gone(pid), 20)
    assert final_numbers(ws) == [1, 2]


def test_a_detached_start_that_cannot_work_fails_with_the_logs_last_lines(ws):
    (ws / "train.py").unlink()  # the loop's own check says so, in its log, and ends before taking the lock
    proc = cli(ws, "run", "--detach")
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 1 and "the loop ended at once (exit 1)" in said, proc.stdout + proc.stderr
    assert "train.py is missing" in said and "loop.log" in said, said
    assert paths.read_info(ledger_dir(ws)) is None and not paths.socket_path(ledger_dir(ws)).exists()
