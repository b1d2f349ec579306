"""Training under bubblewrap: what an untrusted train.py can no longer reach, through the real
sandboxed launcher (skipped, with the reason, where bubblewrap cannot run here); the launcher the
settings ask for; the environment's credential scan."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from pathlib import Path

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.loop.engine import Engine
from nightlab.server.run.env import build_env
from nightlab.server.run.runner import Runner
from nightlab.server.run.sandbox import SandboxedRunner, SandboxSpec, SandboxUnavailable, make_launcher, probe
from support.processes import processes_with
from support.workspace import STAND_IN, git, make_workspace, merge_toml

WHY = probe()
needs_bwrap = pytest.mark.skipif(WHY is not None, reason=f"no sandbox here: {WHY}")

# Each attack an LLM-written train.py might try, and what it got: the script reports on its stdout.
ATTACKS = """
import json, os, socket, subprocess, sys
ws, port, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
def attempt(name, fn):
    try:
        out[name] = repr(fn())
    except Exception as exc:
        out[name] = "blocked: " + type(exc).__name__
attempt("read_user_file", lambda: open(os.path.join(ws, "notes.txt")).read())
attempt("write_user_file", lambda: open(os.path.join(ws, "notes.txt"), "w").write("pwned"))
attempt("plant_hook", lambda: open(os.path.join(ws, ".git", "hooks", "post-checkout"), "w").write("#!/bin/sh"))
attempt("forge_ledger", lambda: open(os.path.join(ws, ".nightlab", "main", "experiments.jsonl"), "a").write("{}"))
def environ_secrets():
    found = 0
    for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
        try:
            found += open(f"/proc/{pid}/environ", "rb").read().count(b"SECRET_OF_THE_LOOP")
        except OSError:
            pass
    return found
attempt("environ_secrets", environ_secrets)
attempt("network", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
attempt("own_checkout", lambda: open("train.py", "a").write("# changed"))
attempt("run_dir", lambda: open(os.environ["NIGHTLAB_EVENTS"], "a").write("") or "ok")
attempt("tmp", lambda: open("/tmp/scratch", "w").write("x") and "ok")
daemon = marker + "-daemon"
subprocess.Popen(["setsid", sys.executable, "-c", "import time; time.sleep(300)", daemon], start_new_session=True)
import time
time.sleep(0.5)
out["daemons"] = sum(daemon.encode() in open(f"/proc/{p}/cmdline", "rb").read()
                     for p in os.listdir("/proc") if p.isdigit())
print("ATTACKS " + json.dumps(out))
print("---")
print("val_bpb:          1.000000")
"""


def layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A user's repository holding a loop: the user's file, .git, the ledger, a slot and a run dir."""
    ws = tmp_path / "ws"
    for d in (".git/hooks", ".nightlab/main", ".nightlab/slots/main/0", ".nightlab/runs/main/1"):
        (ws / d).mkdir(parents=True)
    (ws / "notes.txt").write_text("the user's own file\n")
    (ws / ".nightlab/main/experiments.jsonl").write_text("")
    slot = ws / ".nightlab/slots/main/0"
    (slot / "train.py").write_text(ATTACKS)
    return ws, slot, ws / ".nightlab/runs/main/1"


@needs_bwrap
def test_an_untrusted_run_reaches_nothing_of_the_users(tmp_path, monkeypatch):
    ws, slot, run_dir = layout(tmp_path)
    monkeypatch.setenv("SECRET_OF_THE_LOOP", "sk-ant-api03-" + "x" * 20)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    marker = f"nightlab-daemon-{os.getpid()}-{time.monotonic_ns()}"
    launcher = SandboxedRunner(SandboxSpec(hide=(ws,)))
    port = listener.getsockname()[1]
    try:
        result = asyncio.run(
            launcher.run(
                slot,
                f"python3 train.py {ws} {port} {marker}",
                log_path=run_dir / "run.log",
                events_path=run_dir / "events.jsonl",
                budget_seconds=1,
                budget_tokens=None,
                seed=0,
                deadline_s=60,
            )
        )
    finally:
        listener.close()
    log = (run_dir / "run.log").read_text()
    assert result.status == "ok", log
    got = json.loads(next(line for line in log.splitlines() if line.startswith("ATTACKS "))[8:])
    for attack in ("read_user_file", "write_user_file", "plant_hook", "forge_ledger", "network", "own_checkout"):
        assert got[attack].startswith("blocked"), (attack, got[attack])
    assert got["environ_secrets"] == "0", got  # no process it can see holds the loop's key
    assert got["run_dir"] == "'ok'" and got["tmp"] == "'ok'", got  # its own run directory and /tmp
    assert (ws / "notes.txt").read_text() == "the user's own file\n"
    assert (
        not (ws / ".git/hooks/post-checkout").exists() and (ws / ".nightlab/main/experiments.jsonl").read_text() == ""
    )
    assert got["daemons"] == 1, got  # it was running when the run ended (dash has no `exec -a`: it once never ran)
    assert not processes_with(marker), "a setsid daemon outlived its sandboxed run"


@needs_bwrap
def test_the_loop_runs_sandboxed_when_required(tmp_path):
    ws = make_workspace(tmp_path, STAND_IN)
    toml = (ws / "nightlab.toml").read_text().replace('sandbox = "off"', 'sandbox = "required"')
    (ws / "nightlab.toml").write_text(merge_toml(toml, '[policy]\nname = "strict"\n'))
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "sandboxed")
    engine = Engine(load_settings(ws, {"max_experiments": 2}))
    asyncio.run(engine.run())
    assert isinstance(engine.launcher, SandboxedRunner)
    assert [e.status for e in engine.ledger.experiments()] == ["keep", "discard"] or engine.ledger.experiments()[
        0
    ].status == "keep"
    assert all(e.status != "crash" for e in engine.ledger.experiments()), [e.error for e in engine.ledger.experiments()]


def test_the_launcher_the_settings_ask_for(tmp_path):
    said: list[str] = []
    spec = SandboxSpec(hide=(tmp_path,))
    assert type(make_launcher("off", spec, said.append)) is Runner and not said
    missing = str(tmp_path / "no-bwrap-here")
    assert type(make_launcher("auto", spec, said.append, bwrap=missing)) is Runner
    assert len(said) == 1 and "not sandboxed" in said[0] and "not installed" in said[0]
    with pytest.raises(SandboxUnavailable, match='sandbox = "required", but bubblewrap'):
        make_launcher("required", spec, said.append, bwrap=missing)
    if WHY is None:
        assert isinstance(make_launcher("auto", spec, said.append), SandboxedRunner)


def test_a_required_sandbox_that_cannot_run_stops_the_loop_with_words(tmp_path, monkeypatch):
    ws = make_workspace(tmp_path, STAND_IN)
    (ws / "nightlab.toml").write_text(
        (ws / "nightlab.toml").read_text().replace('sandbox = "off"', 'sandbox = "required"')
    )
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "required")
    from nightlab.server.run import sandbox

    monkeypatch.setattr(sandbox, "probe", lambda bwrap="bwrap": "bubblewrap (bwrap) is not installed (a test)")
    engine = Engine(load_settings(ws, {"max_experiments": 1}))
    states = []
    engine.subscribe(lambda e: states.append(e) if e["type"] == "state" else None)
    asyncio.run(engine.run())
    assert states[-1]["state"] == "errored" and 'sandbox = "required"' in states[-1]["reason"]
    assert "install bubblewrap" in states[-1]["reason"] and not engine.ledger.experiments()


@pytest.mark.parametrize(
    "name, value, passes",
    [
        ("UV_INDEX_URL", "https://user:s3cret@pypi.example.com/simple", False),  # a password in a URL
        ("UV_INDEX_URL", "https://pypi.example.com/simple", True),
        ("HF_HOME", "hf_" + "a" * 30, False),  # a Hugging Face token where a path belongs
        ("TERM", "sk-ant-api03-" + "b" * 24, False),
        ("LANG", "en_US.UTF-8", True),
    ],
)
def test_credentials_in_allowed_variables_stay_out(name, value, passes):
    env = build_env({name: value}, events_path=None, seed=0)
    assert (name in env) is passes, env
