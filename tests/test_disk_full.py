"""A full disk pauses the loop (issue 11, item 9): the landed loop died with a raw `OSError: [Errno 28]` or a
StoreError printing the whole git command. Now it is PAUSED with a reason naming the disk and the space
the next experiment needs, looks again every `interval` seconds, resumes by itself, records every
experiment once (an append that failed half way leaves nothing behind and is done again), and stops on
Stop while it waits. The free space is the module's `free_bytes` (replaced here), a failed write is an
OSError(ENOSPC) from the ledger's one write call or git's message; one test fills a real tmpfs."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import subprocess
import time

import pytest

from nightlab.protocol import events as ev
from nightlab.server.core.settings import load_settings
from nightlab.server.core.types import LoopState
from nightlab.server.loop import space
from nightlab.server.loop.engine import Engine
from nightlab.server.record import durable
from nightlab.server.record.ledger import Ledger
from nightlab.server.record.store import Slot, StoreError
from support.agents import Scripted, messages
from support.workspace import git, knob, make_workspace, merge_toml

MB = 1 << 20
PLENTY = 50 << 30
PROPOSALS = [knob("X", "1.0", "1.5"), knob("X", "1.0", "1.2")]


def drive(ws, n, on_event=None, interval=0.05, proposals=PROPOSALS):
    """The real loop on `ws` for `n` experiments; `on_event(engine, event)` sees every event as it comes."""
    engine = Engine(load_settings(ws, {"max_experiments": n}), agent=Scripted(list(proposals)))
    engine.space.interval = interval
    events: list[dict] = []

    def listen(event):
        events.append(event)
        if on_event:
            on_event(engine, event)

    engine.subscribe(listen)
    started = time.monotonic()
    asyncio.run(asyncio.wait_for(engine.run(), 120))
    return engine, events, time.monotonic() - started


def finished(event, number):
    return event["type"] == ev.EXPERIMENT_FINISHED and event["experiment"]["number"] == number


def paused_for_disk(events):
    return [e["reason"] for e in events if e["type"] == ev.STATE and e["state"] == "paused" and "disk" in e["reason"]]


def recorded_once(ws, n):
    """Every line of the ledger whole, each of 1..n final exactly once, results.tsv agreeing."""
    folder = ws / ".nightlab" / "main"
    lines = (folder / "experiments.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # a torn line would raise here
    finals = [r["number"] for r in records if r.get("status") in ("keep", "discard", "crash", "interrupted")]
    assert sorted(finals) == list(range(1, n + 1)), finals
    ledger = Ledger(folder)
    assert [e.number for e in ledger.experiments()] == list(range(1, n + 1))
    assert ledger.tsv_rows() == ledger.expected_rows()
    return ledger


def test_too_little_space_pauses_before_the_next_experiment_and_resumes(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    short = {"left": 0}

    def free(path):
        if short["left"] > 0:
            short["left"] -= 1
            return 12 * MB
        return PLENTY

    monkeypatch.setattr(space, "free_bytes", free)

    def on_event(engine, event):
        if finished(event, 1):
            short["left"] = 4  # four looks at a full disk, then someone frees space

    engine, events, _ = drive(ws, 3, on_event)
    reasons = paused_for_disk(events)
    assert len(reasons) == 1, reasons
    assert re.fullmatch(
        r"disk full: \S+ has 12 MB free; the next experiment needs about 200 MB \(its run folder, the "
        r"worktree's commit\); free some space and it resumes",
        reasons[0],
    ), reasons[0]
    assert any(
        re.fullmatch(r"there is disk space again \(\S+ has 50\.0 GB free\): the loop resumes", m)
        for m in messages(events)
    )
    assert engine.state == LoopState.STOPPED
    recorded_once(ws, 3)


def test_the_estimate_is_twice_the_largest_recent_run_folder_plus_the_margin(tmp_path):
    ws = make_workspace(tmp_path)
    engine = Engine(load_settings(ws), agent=Scripted([]))
    for n, size in ((1, 3 * MB), (2, 5 * MB), (3, 1 * MB)):
        (engine.runs_dir / str(n)).mkdir(parents=True)
        (engine.runs_dir / str(n) / "run.log").write_bytes(os.urandom(size))
    assert abs(engine.space.needed() - (2 * 5 * MB + space.MARGIN)) < MB


def half_then_full(monkeypatch, *markers: bytes):
    """The ledger's next write whose bytes hold every marker puts half its line on disk, then ENOSPC."""
    real, state = durable._write, {"failed": 0}

    def write(fd, data):
        if not state["failed"] and all(m in data for m in markers):
            state["failed"] += 1
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(durable, "_write", write)
    return state


KEPT = [knob("X", "1.0", "0.5"), knob("X", "0.5", "0.4")]
FAILING_WRITES = [
    # which append fails half way, the proposals
    ("the first record", (b'"number":2,"tag":"main"',), PROPOSALS),
    ("a discard's verdict", (b'"status":"discard"',), PROPOSALS),
    ("a keep's verdict, the branch moved", (b'"number":2,', b'"status":"keep"'), KEPT),
]


@pytest.mark.parametrize("name,markers,proposals", FAILING_WRITES, ids=[w[0] for w in FAILING_WRITES])
def test_a_ledger_append_that_fails_on_a_full_disk_is_done_again_once(tmp_path, monkeypatch, name, markers, proposals):
    ws = make_workspace(tmp_path)
    state = half_then_full(monkeypatch, *markers)
    engine, events, _ = drive(ws, 3, proposals=proposals)
    assert state["failed"] == 1
    reasons = paused_for_disk(events)
    assert reasons and "a write failed ([Errno 28] No space left on device)" in reasons[0], reasons
    assert engine.state == LoopState.STOPPED, events[-1]
    ledger = recorded_once(ws, 3)
    if proposals is KEPT:
        assert [str(e.status) for e in ledger.experiments()] == ["keep", "keep", "keep"]
        assert git(ws, "rev-parse", "nightlab/main") == ledger.get(3).commit


def test_a_commit_that_fails_on_a_full_disk_is_done_again(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    real, state = Slot.commit, {"failed": 0}

    def commit(self, files, message, number):
        if number == 2 and not state["failed"]:
            state["failed"] += 1
            raise StoreError("git commit -F /tmp/msg failed: error: unable to write file: No space left on device")
        return real(self, files, message, number)

    monkeypatch.setattr(Slot, "commit", commit)
    engine, events, _ = drive(ws, 3)
    assert state["failed"] == 1 and paused_for_disk(events)
    assert engine.state == LoopState.STOPPED, events[-1]
    recorded_once(ws, 3)


def test_stop_works_while_paused_for_disk(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    full = {"on": False}
    monkeypatch.setattr(space, "free_bytes", lambda path: 12 * MB if full["on"] else PLENTY)
    seen: dict[str, float] = {}

    def on_event(engine, event):
        if finished(event, 1):
            full["on"] = True
        if event["type"] == ev.STATE and event["state"] == "paused" and "stop" not in seen:
            seen["stop"] = time.monotonic()
            asyncio.get_running_loop().call_later(0.3, engine.stop)

    engine, events, _ = drive(ws, 3, on_event, interval=60)  # a look every minute: Stop must not wait for it
    ended = time.monotonic()
    assert engine.state == LoopState.STOPPED and events[-1]["reason"] == "stop requested", events[-1]
    assert ended - seen["stop"] < 10
    ledger = Ledger(ws / ".nightlab" / "main")
    assert [(e.number, str(e.status)) for e in ledger.experiments()] == [(1, "keep")]  # nothing half started


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB filesystem (tmpfs), when this user may mount one."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip(f"mounting a small tmpfs needs root (this runs as uid {os.geteuid()})")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_real_full_disk_pauses_the_loop_until_space_is_freed(small_disk, monkeypatch):
    monkeypatch.setattr(space, "MARGIN", 6 * MB)  # the tmpfs is 24 MB
    ws = make_workspace(small_disk)
    ballast = small_disk / "ballast"

    def on_event(engine, event):
        if finished(event, 1):  # fill the disk to 2 MB free
            free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
            with open(ballast, "wb") as f:
                f.write(b"\0" * (free - 2 * MB))
        if event["type"] == ev.STATE and event["state"] == "paused" and ballast.exists():
            asyncio.get_running_loop().call_later(0.3, ballast.unlink)

    engine, events, _ = drive(ws, 3, on_event)
    reasons = paused_for_disk(events)
    assert reasons and reasons[0].startswith(f"disk full: {small_disk} has 2 MB free"), reasons
    assert "needs about 6 MB" in reasons[0]
    assert engine.state == LoopState.STOPPED, events[-1]
    recorded_once(ws, 3)


def test_a_crash_while_the_disk_is_short_runs_again_once_there_is_space(tmp_path, monkeypatch):
    """Its crash stays recorded (it did crash), but the change gets a fair run: the disk, not the code,
    may have been the cause (a log that could not be written, a checkpoint that did not fit)."""
    ws = make_workspace(tmp_path)
    short = {"left": 0}

    def free(path):
        short["left"] -= 1
        return 12 * MB if short["left"] >= 0 else PLENTY

    monkeypatch.setattr(space, "free_bytes", free)

    def on_event(engine, event):
        if finished(event, 2):
            short["left"] = 3

    crashing = knob("MODE", '"ok"', '"fail"')
    toml = ws / "nightlab.toml"  # no draft ahead: the re-run is what comes next
    toml.write_text(merge_toml(toml.read_text(), "[run]\npropose_ahead = false\n"))
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "no drafts")
    engine, events, _ = drive(ws, 3, on_event, proposals=[crashing])
    assert "#2 crashed while the disk was full; it runs again once there is space" in messages(events)
    exps = Ledger(ws / ".nightlab" / "main").experiments()
    assert [(e.number, str(e.status), e.rerun_of) for e in exps] == [
        (1, "keep", None),
        (2, "crash", None),
        (3, "crash", 2),
    ]


def test_a_disk_full_at_the_start_pauses_before_anything_is_written(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path)
    short = {"left": 3}

    def free(path):
        short["left"] -= 1
        return 12 * MB if short["left"] >= 0 else PLENTY

    monkeypatch.setattr(space, "free_bytes", free)
    seen = {}

    def on_event(engine, event):
        if event["type"] == ev.STATE and event["state"] == "paused":
            seen["ledger"] = (ws / ".nightlab" / "main" / "ledger.key").exists()  # nor its lock, nor the branch

    engine, events, _ = drive(ws, 2, on_event)
    assert len(paused_for_disk(events)) == 1 and seen == {"ledger": False}
    assert engine.state == LoopState.STOPPED
    recorded_once(ws, 2)


def test_a_disk_that_fills_during_a_run_pauses_the_loop_and_the_run_is_done_again(small_disk, monkeypatch):
    """The disk fills to its last byte while #2 trains: its log cannot be written (a crash), nor git's
    amend of its verdict (ENOSPC from git). The loop pauses, records #2 once space is back, and runs
    its change again."""
    monkeypatch.setattr(space, "MARGIN", 6 * MB)
    ws = make_workspace(small_disk)
    ballast = small_disk / "ballast"

    def on_event(engine, event):
        if event["type"] == ev.EXPERIMENT_STARTED and event["experiment"]["number"] == 2:
            with open(ballast, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                        f.flush()
                except OSError:
                    pass
        if event["type"] == ev.STATE and event["state"] == "paused" and ballast.exists():
            asyncio.get_running_loop().call_later(0.3, ballast.unlink)

    engine, events, _ = drive(ws, 4, on_event, proposals=[*PROPOSALS, knob("X", "1.0", "1.1")])
    reasons = paused_for_disk(events)
    assert reasons and reasons[0].startswith(f"disk full: {small_disk} has 0 MB free"), reasons
    assert "#2 crashed on the full disk; it runs again" in messages(events)
    assert engine.state == LoopState.STOPPED, events[-1]
    exps = recorded_once(ws, 4).experiments()
    assert exps[1].status == "crash" and "No space left on device" in exps[1].decision_reason
    assert [e.rerun_of for e in exps if e.rerun_of] == [2] and all(e.status != "crash" for e in exps[2:])
