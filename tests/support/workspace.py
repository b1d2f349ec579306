"""A workspace for the loop to run in: the stand-in train.py (it trains nothing: its "val_bpb" is its knob X,
and MODE makes it crash, hang, fork or tamper), a committed git workspace around it, and small helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nightlab.server.core.types import FileEdit, Proposal

STAND_IN = """import os, sys, time
X = 1.0            # the metric this run reports
MODE = "ok"        # ok | fail | nometric | hang | tamper | envdump | nan
if MODE == "fail":
    print("FAIL"); sys.exit(1)
if MODE == "nometric":
    print("trained, but printed nothing"); sys.exit(0)
if MODE == "hang":
    pid = os.fork()
    if pid == 0:
        time.sleep(1000); os._exit(0)
    import tempfile; open(os.path.join(tempfile.gettempdir(), "child.pid"), "w").write(str(pid))
    time.sleep(1000)
if MODE == "tamper":
    open("prepare.py", "a").write("# changed by train.py\\n")
if MODE == "envdump":
    import json, tempfile
    open(os.path.join(tempfile.gettempdir(), "env.json"), "w").write(json.dumps(dict(os.environ)))
if MODE == "slow":
    time.sleep(30)
value = float("nan") if MODE == "nan" else X
print("---")
print(f"val_bpb:          {value:.6f}")
print("training_seconds: 0.1")
print("total_seconds:    0.2")
print("peak_vram_mb:     2048.0")
print("num_steps:        1")
"""

# The stand-in reports through files in /tmp (child.pid, env.json) and tampers with prepare.py on
# purpose: outside the sandbox, which would hide both (tests/test_sandbox.py runs it inside).
TOML = """[run]
command = "python train.py"
sandbox = "off"
[budget]
seconds = 1
timeout_seconds = {timeout}
"""

# the stand-in with a CRASH knob and a crash below X = 0.3, both raising on one known line
CRASHY = STAND_IN.replace(
    'MODE = "ok" ', 'CRASH = False      # the offline agent flips it: a crash on a known line\nMODE = "ok" '
).replace(
    'if MODE == "fail":', 'if CRASH or X < 0.3:\n    raise RuntimeError("X below 0.3 diverges")\nif MODE == "fail":'
)


def git(ws, *args):
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout.strip()


def make_workspace(tmp_path, train=STAND_IN, timeout=20):
    """A committed workspace with the stand-in trainer and a file of the user's own."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(train)
    (ws / "prepare.py").write_text("# the fixed harness\n")
    (ws / "program.md").write_text("lower X\n")
    (ws / "nightlab.toml").write_text(TOML.format(timeout=timeout))
    (ws / "notes.txt").write_text("the user's own file\n")
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")
    return ws


def user_state(ws):
    return (
        git(ws, "rev-parse", "HEAD"),
        git(ws, "status", "--porcelain"),
        git(ws, "branch", "--show-current"),
        (ws / "notes.txt").read_text(),
    )


def knob(name, old, new, desc=None):
    return Proposal(
        description=desc or f"{name} {old} -> {new}",
        edits=[FileEdit("train.py", f"{name} = {old}", f"{name} = {new}")],
        agent="scripted",
    )


def merge_toml(text, extra):
    """Add the keys of `extra`'s sections to the same sections of `text` (TOML forbids a second [run])."""
    section = None
    for line in extra.splitlines():
        if line.startswith("["):
            section = line
            if section not in text:
                text += "\n" + section + "\n"
        elif line.strip():
            text = text.replace(section + "\n", section + "\n" + line + "\n", 1)
    return text


def run_train(workspace: Path, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `python train.py` in a workspace the way a user would, and return the finished process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "train.py"], cwd=workspace, env=full_env, capture_output=True, text=True, timeout=timeout
    )


# The real trainer, made small: its evaluation (2**17 tokens, fixed by prepare.py) then takes seconds.
SMALL = {"DEPTH": 1, "WIDTH": 32}
TRAINER_FILES = ("train.py", "prepare.py", "prepare_data.py", "judge.py")


def trainer_workspace(folder: Path, knobs: dict | None = None, edit=None) -> Path:
    """A copy of Nightlab's template (the real trainer and its judge) with `knobs` set in train.py and
    `edit(text) -> text` applied to it (an attack, as an LLM would commit it)."""
    from nightlab.trainer.workspace import copy_template, set_constants

    copy_template(folder)
    text = set_constants((folder / "train.py").read_text(), {**SMALL, **(knobs or {})})
    (folder / "train.py").write_text(edit(text) if edit else text)
    return folder


def committed(folder: Path) -> dict[str, bytes]:
    """The trainer's files as the loop would read them from the experiment's commit."""
    return {name: (folder / name).read_bytes() for name in TRAINER_FILES}


def best_proposal() -> Proposal:
    """Two hunks on the stand-in (X 0.8 -> 0.6, one step -> two): the change Apply best's tests keep."""
    steps = ('print("num_steps:        1")', 'print("num_steps:        2")')
    return Proposal(
        description="X 0.8 -> 0.6 and two steps",
        edits=[FileEdit("train.py", "X = 0.8", "X = 0.6"), FileEdit("train.py", *steps)],
        agent="scripted",
    )
