"""The `nightlab` CLI as a user runs it: subprocesses, signals, kill -9 and resume, monitor."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nightlab.server.record.ledger import Ledger
from support.workspace import STAND_IN, git, make_workspace, user_state

NIGHTLAB = [sys.executable, "-m", "nightlab.server.cli"]


@pytest.fixture
def ws(tmp_path):
    # the runner passes TMPDIR (and no unknown variable): a marker file there makes every run take 30 s
    slow = 'MODE = "slow" if os.path.exists(os.path.join(__import__("tempfile").gettempdir(), "slow")) else "ok"'
    return make_workspace(tmp_path, STAND_IN.replace('MODE = "ok"', slow), timeout=60)


def cli(ws, *args, env=None, timeout=120):
    return subprocess.run(
        [*NIGHTLAB, *args], cwd=ws, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def ledger(ws):
    return Ledger(ws / ".nightlab" / "main")


def test_run_status_results(ws):
    before = user_state(ws)
    proc = cli(ws, "run", "--max-experiments", "4", "--plain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exps = ledger(ws).experiments()
    assert len(exps) == 4 and exps[0].status == "keep"
    assert "experiments" in proc.stdout and "results.tsv" in proc.stdout
    assert (ws / ".nightlab/main/progress.png").exists()
    assert user_state(ws) == before
    status = cli(ws, "status")
    assert "4 experiments" in status.stdout and "loop: not running" in status.stdout
    results = cli(ws, "results", "--status", "keep")
    assert "baseline" in results.stdout
    # a second run continues the numbering
    assert cli(ws, "run", "--max-experiments", "2", "--plain").returncode == 0
    assert [e.number for e in ledger(ws).experiments()] == [1, 2, 3, 4, 5, 6]


def test_run_header_names_workspace_tag_agent_and_budget(ws):
    """Bug: with --budget-tokens the header was only "budget N tokens" (a conditional took the whole line)."""
    proc = cli(ws, "run", "--budget-tokens", "5000", "--max-experiments", "1", "--plain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header = proc.stdout.splitlines()[0]
    assert header.startswith("nightlab ") and str(ws.resolve()) in header, header
    assert "tag main" in header and "agent offline" in header and header.endswith("budget 5,000 tokens"), header
    proc = cli(ws, "run", "--budget", "7", "--max-experiments", "1", "--plain")
    assert proc.returncode == 0 and "tag main" in proc.stdout.splitlines()[0]
    assert proc.stdout.splitlines()[0].endswith("budget 7s")


def test_a_metric_other_than_val_bpb_is_a_result_not_a_crash(tmp_path):
    """Bug: with [metric] name other than val_bpb every run was a crash ("no val_bpb in the summary")."""
    ws = make_workspace(tmp_path, STAND_IN.replace('print(f"val_bpb:', 'print(f"val_loss:'))
    (ws / "nightlab.toml").write_text((ws / "nightlab.toml").read_text() + '[metric]\nname = "val_loss"\n')
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "val_loss")
    proc = cli(ws, "run", "--max-experiments", "2", "--policy", "strict", "--plain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exps = Ledger(ws / ".nightlab" / "main", "val_loss").experiments()
    assert [e.status for e in exps][:1] == ["keep"] and exps[0].metric == 1.0, [(e.status, e.error) for e in exps]
    assert "no val_bpb" not in proc.stdout


def test_bad_settings_are_a_clear_error(ws):
    (ws / "nightlab.toml").write_text("[budget]\nseconds = 'abc'\n")
    proc = cli(ws, "run", "--plain")
    assert proc.returncode == 1 and "[budget] seconds" in proc.stderr and "Traceback" not in proc.stderr


def _start_slow_loop(ws):
    tmp = ws.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    (tmp / "slow").write_text("")
    return subprocess.Popen(
        [*NIGHTLAB, "run", "--plain"],
        cwd=ws,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def _orphans(ws):
    """Training processes still running in the loop's worktree."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.readlink(proc / "cwd").startswith(str(ws / ".nightlab")):
                if (proc / "stat").read_text().split()[2] != "Z":
                    out.append(int(proc.name))
        except OSError:
            pass
    return out


def _running(ws):
    return any(e.status == "running" for e in ledger(ws).experiments())


def test_kill_9_then_resume_loses_and_duplicates_nothing(ws):
    proc = _start_slow_loop(ws)
    try:
        assert wait_for(lambda: _running(ws)), "the first experiment never started"
        time.sleep(0.5)
        proc.kill()  # kill -9: no chance to record anything
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [e.status for e in ledger(ws).experiments()] == ["running"]
    # the training dies with the loop (PR_SET_PDEATHSIG), before any restart; recovery's kill of what a
    # dead loop left is tested in test_runner (kill_orphan)
    assert wait_for(lambda: not _orphans(ws), 10), "the training outlived the killed loop"
    (ws.parent / "tmp" / "slow").unlink()
    again = cli(ws, "run", "--max-experiments", "3", "--plain")
    assert again.returncode == 0, again.stdout + again.stderr
    exps = ledger(ws).experiments()
    assert [(e.number, e.status) for e in exps][:2] == [(1, "interrupted"), (2, "keep")]
    assert exps[1].rerun_of == 1 and exps[1].description == "baseline"
    numbers = [e.number for e in exps]
    assert numbers == sorted(set(numbers)) == [1, 2, 3, 4]
    rows = (ws / ".nightlab/main/results.tsv").read_text().splitlines()[1:]
    assert len(rows) == 3  # every final experiment exactly once; the interrupted one is in the jsonl only
    assert len({r.split("\t")[0] for r in rows}) == 3
    assert git(ws, "status", "--porcelain") == ""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_records_the_run_and_exits(ws, sig):
    proc = _start_slow_loop(ws)
    try:
        assert wait_for(lambda: _running(ws))
        time.sleep(0.5)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    (ws.parent / "tmp" / "slow").unlink()
    assert not _orphans(ws)
    exps = ledger(ws).experiments()
    assert [e.status for e in exps] == ["interrupted"]
    assert "stopping" in out
    # next start re-runs it under a new number
    assert cli(ws, "run", "--max-experiments", "1", "--plain").returncode == 0
    assert [(e.number, e.status) for e in ledger(ws).experiments()] == [(1, "interrupted"), (2, "keep")]


def test_second_loop_on_the_same_tag_is_refused(ws):
    proc = _start_slow_loop(ws)
    try:
        assert wait_for(lambda: _running(ws))
        other = cli(ws, "run", "--plain")
        assert other.returncode == 1 and "another nightlab loop" in other.stderr
        assert "running (pid" in cli(ws, "status").stdout
    finally:
        proc.kill()
        proc.wait()
        for pid in _orphans(ws):
            os.kill(pid, signal.SIGKILL)


def test_monitor_follows_another_agents_run(tmp_path):
    folder = tmp_path / "autoresearch"
    folder.mkdir()
    (folder / "results.tsv").write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\n")

    def writer():
        for i in range(3):
            time.sleep(0.4)
            with open(folder / "run.log", "w") as log:
                log.write(
                    "step 00001 (50.0%) | loss: 2.0 | lrm: 1.00 | dt: 10ms | tok/sec: 1,000 | mfu: 1.0% | "
                    "epoch: 1 | remaining: 1s\r"
                )
                log.write(f"---\nval_bpb:          {1 - i / 10:.6f}\n")
            with open(folder / "results.tsv", "a") as f:
                f.write(f"abc{i:04d}\t{1 - i / 10:.6f}\t1.0\tkeep\tidea {i}\n")

    thread = threading.Thread(target=writer)
    thread.start()
    proc = subprocess.run(
        [*NIGHTLAB, "monitor", str(folder), "--timeout", "4", "--plain"], capture_output=True, text=True, timeout=60
    )
    thread.join()
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("row ")]
    assert [r.split()[-1] for r in rows] == ["0", "1", "2"]
    assert "best val_bpb: 0.800000" in proc.stdout
