"""Starting a tag's loop as a process of its own (`nightlab run` in a new session, output to
`.nightlab/<tag>/loop.log`), and waiting until it is up: it answers on its control socket and holds the
tag's lock. For the CLI's `run --detach`, and for the language server's Start (in a thread: it waits).

Must not import: rich, typer, pygls, lsprotocol, the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nightlab.server.control import paths
from nightlab.server.record.lock import loop_owner

ENV_LOG = "NIGHTLAB_LOOP_LOG"  # the log the launched loop names in its loop.json (the loop pops it)
WAIT_S = 60.0  # for the launched loop to be up


class LaunchFailed(Exception):
    """The loop could not be started, or ended before it was up; the message says why, with its log's tail."""


@dataclass
class Launched:
    pid: int
    log: Path
    ended: bool = False  # it did all it was asked (exit 0) before it was seen up
    tail: tuple[str, ...] = ()  # the log's last lines, when it ended


def launch(
    ledger_dir: Path,
    args: list[str],
    *,
    cwd: str | os.PathLike | None = None,
    wait_s: float = WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> Launched:
    """Run `nightlab <args>` (a `run` command line; --plain is added) detached, and wait until it is up.
    LaunchFailed when a loop already runs on the tag, or this one ends (exit != 0) or hangs first."""
    ledger_dir = Path(ledger_dir)
    try:
        running = paths.find_loop(ledger_dir)
        raise LaunchFailed(f"a loop (pid {running.pid}) is already running on tag {ledger_dir.name}")
    except paths.NoLoop:
        pass
    ledger_dir.mkdir(parents=True, exist_ok=True)
    log = ledger_dir / paths.LOG_NAME
    args = [*args, *([] if "--plain" in args else ["--plain"])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightlab.server.cli", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in the terminal's process group: its Ctrl-C and hang-up pass it by
            # PYTHONSAFEPATH: `-m` from a workspace folder must not import a `nightlab/` folder found there
            env={**os.environ, ENV_LOG: str(log), "PYTHONUNBUFFERED": "1", "PYTHONSAFEPATH": "1"},
        )
    end = time.monotonic() + wait_s
    while True:
        info = paths.read_info(ledger_dir)
        # up: it answers and holds the tag's lock (a start that cannot work ends before it takes the lock)
        if info is not None and info.pid == proc.pid and paths.answers(info.socket):
            if loop_owner(ledger_dir) == proc.pid:
                return Launched(proc.pid, log)
        if proc.poll() is not None:
            tail = tuple(paths.log_tail(log, 10))
            if proc.returncode == 0:
                return Launched(proc.pid, log, ended=True, tail=tail)
            lines = "\n  ".join(tail) or "(nothing)"
            raise LaunchFailed(f"the loop ended at once (exit {proc.returncode}); the last lines of {log}:\n  {lines}")
        if time.monotonic() > end:
            raise LaunchFailed(f"the loop (pid {proc.pid}) did not answer within {wait_s:.0f} s; see {log}")
        sleep(0.1)
