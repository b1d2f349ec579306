"""The runner against tiny stand-in training scripts: outcomes, deadlines, process groups, progress, env."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from nightlab.server.core.types import Progress, RunResult
from nightlab.server.run.env import build_env
from nightlab.server.run.processes import compile_check
from nightlab.server.run.runner import Runner
from nightlab.server.run.summary import format_summary

PYTHON = shlex.quote(sys.executable)
BLOCK = format_summary(
    {
        "val_bpb": 1.234567,
        "training_seconds": 2.5,
        "total_seconds": 3.0,
        "peak_vram_mb": 321.5,
        "mfu_percent": 0.0,
        "total_tokens_M": 0.1,
        "num_steps": 5,
        "num_params_M": 0.2,
        "depth": 2,
    }
)

# A forked child and grandchild that ignore SIGTERM and sleep forever, writing their pids to pids.txt,
# so only a SIGKILL to the whole process group ends them.
FORK_AND_HANG = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", (
    "import os, signal, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "pid = os.fork()\\n"
    "if pid == 0:\\n"
    "    time.sleep(1000)\\n"
    "open('pids.txt', 'a').write(f'{os.getpid()}\\\\n{pid}\\\\n')\\n"
    "time.sleep(1000)\\n")])
while not os.path.exists("pids.txt") or len(open("pids.txt").read().split()) < 2:
    time.sleep(0.02)
print("children started", flush=True)
time.sleep(1000)
"""


def alive(pid: int) -> bool:
    """True while `pid` runs; a zombie nobody reaps counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def run_script(
    tmp_path: Path, body: str, *, deadline_s: float = 30.0, runner: Runner | None = None, **kwargs
) -> RunResult:
    (tmp_path / "train.py").write_text(textwrap.dedent(body))
    runner = runner or Runner(kill_grace_s=0.5, poll_interval_s=0.2)
    kwargs.setdefault("budget_seconds", 60)
    kwargs.setdefault("budget_tokens", None)
    return await runner.run(
        tmp_path,
        f"{PYTHON} train.py",
        log_path=tmp_path / "run" / "run.log",
        events_path=tmp_path / "run" / "events.jsonl",
        seed=0,
        deadline_s=deadline_s,
        **kwargs,
    )


# --------------------------------------------------------------------------- outcomes
OUTCOME_CASES = [
    ("ok", f"print('hello')\nprint({BLOCK!r})\n", "ok", []),
    ("FAIL line, exit 0", "print('step 00003 (3.0%) | loss: nan')\nprint('FAIL')\n", "crash", ["FAIL"]),
    ("FAIL line, exit 1", "import sys\nprint('FAIL')\nsys.exit(1)\n", "crash", ["exit code 1", "FAIL"]),
    ("no metric", "print('---')\nprint('num_steps:        5')\n", "crash", ["no val_bpb"]),
    ("nan metric", "print('---')\nprint('val_bpb:          nan')\n", "crash", ["val_bpb is nan"]),
    ("inf metric", "print('---')\nprint('val_bpb:          inf')\n", "crash", ["val_bpb is inf"]),
    (
        "traceback",
        "print('starting')\ndef f():\n    raise RuntimeError('boom at step 3')\nf()\n",
        "crash",
        ["exit code 1", "Traceback (most recent call last)", "RuntimeError: boom at step 3", "starting"],
    ),
]


@pytest.mark.parametrize("name,body,status,in_error", OUTCOME_CASES, ids=[c[0] for c in OUTCOME_CASES])
async def test_outcomes(tmp_path: Path, name: str, body: str, status: str, in_error: list[str]) -> None:
    result = await run_script(tmp_path, body)
    assert result.status == status, result.error
    for text in in_error:
        assert text in result.error
    assert Path(result.log_path).exists()


async def test_ok_result_fields(tmp_path: Path) -> None:
    result = await run_script(tmp_path, f"print({BLOCK!r})\n")
    assert result.status == "ok" and result.returncode == 0 and result.error == ""
    assert result.metric("val_bpb") == pytest.approx(1.234567)
    assert result.metrics["num_steps"] == 5
    assert result.training_s == pytest.approx(2.5)
    assert result.peak_memory_mb == pytest.approx(321.5)
    assert result.total_s > 0


async def test_the_metric_is_the_settings_metric_not_val_bpb(tmp_path: Path) -> None:
    """Bug: a workspace whose [metric] name is not val_bpb had every run counted as a crash."""
    block = format_summary({"val_loss": 2.5, "num_steps": 5})
    result = await run_script(tmp_path, f"print({block!r})\n", metric_name="val_loss")
    assert result.status == "ok", result.error
    assert result.metric("val_loss") == pytest.approx(2.5)
    nan = await run_script(tmp_path, "print('---')\nprint('val_loss:         nan')\n", metric_name="val_loss")
    assert nan.status == "crash" and "val_loss is nan" in nan.error
    missing = await run_script(tmp_path, f"print({BLOCK!r})\n", metric_name="val_loss")
    assert missing.status == "crash" and "no val_loss in the summary" in missing.error
    # a metric only the events file's summary carries counts too
    body = """
    import json, os
    with open(os.environ["NIGHTLAB_EVENTS"], "a") as f:
        f.write(json.dumps({"event": "summary", "accuracy": 0.75}) + "\\n")
    """
    from_events = await run_script(tmp_path, body, metric_name="accuracy")
    assert from_events.status == "ok" and from_events.metric("accuracy") == pytest.approx(0.75), from_events.error


async def test_command_not_found_is_a_crash(tmp_path: Path) -> None:
    result = await Runner().run(
        tmp_path,
        "no-such-program-xyz",
        log_path=tmp_path / "run.log",
        events_path=tmp_path / "events.jsonl",
        budget_seconds=1,
        budget_tokens=None,
        seed=0,
        deadline_s=5,
    )
    assert result.status == "crash" and "could not start" in result.error


# --------------------------------------------------------------------------- deadline and cancel
async def test_deadline_kills_the_whole_group(tmp_path: Path) -> None:
    result = await run_script(tmp_path, FORK_AND_HANG, deadline_s=2.5)
    assert result.status == "timeout"
    pids = [int(p) for p in (tmp_path / "pids.txt").read_text().split()]
    assert len(pids) == 2
    assert not any(alive(pid) for pid in pids)


async def test_cancel_interrupts_and_kills_the_group(tmp_path: Path) -> None:
    cancel = asyncio.Event()

    async def cancel_when_children_run() -> None:
        pid_file = tmp_path / "pids.txt"
        while not pid_file.exists() or len(pid_file.read_text().split()) < 2:
            await asyncio.sleep(0.05)
        cancel.set()

    helper = asyncio.ensure_future(cancel_when_children_run())
    result = await run_script(tmp_path, FORK_AND_HANG, deadline_s=30, cancel=cancel)
    await helper
    assert result.status == "interrupted"
    pids = [int(p) for p in (tmp_path / "pids.txt").read_text().split()]
    assert not any(alive(pid) for pid in pids)


# --------------------------------------------------------------------------- progress
async def test_progress_from_events_file(tmp_path: Path) -> None:
    body = f"""
    import json, os, time
    events = open(os.environ["NIGHTLAB_EVENTS"], "a")
    def emit(**event):
        events.write(json.dumps(event) + "\\n"); events.flush()
    emit(event="start", device="cpu", budget_mode="time", budget=60, num_params_M=0.2, seed=0)
    for step in range(5):
        time.sleep(0.15)
        emit(event="step", step=step, elapsed_s=0.1 * step, loss=3.0 - step * 0.1, tok_per_s=1000.0,
             mfu=0.0, lr=0.003, progress=(step + 1) / 5)
    emit(event="summary", val_bpb=1.234567, startup_s=0.2, training_s=0.75, eval_s=0.4, total_s=1.5,
         peak_mem_mb=300.0)
    print({BLOCK!r})
    """
    seen: list[Progress] = []
    result = await run_script(tmp_path, body, on_progress=seen.append)
    assert result.status == "ok", result.error
    assert [p.step for p in seen] == [0, 1, 2, 3, 4]
    assert seen[-1].fraction == pytest.approx(1.0) and seen[2].loss == pytest.approx(2.8)
    assert seen[1].lr == pytest.approx(0.003) and seen[1].elapsed_s == pytest.approx(0.1)
    assert result.eval_s == pytest.approx(0.4)
    assert 0 < result.startup_s <= result.total_s


async def test_progress_from_step_lines_in_the_log(tmp_path: Path) -> None:
    body = f"""
    import time
    for step in range(6):
        time.sleep(0.15)
        print(f"\\rstep {{step:05d}} ({{(step + 1) * 100 / 6:.1f}}%) | loss: {{3 - step / 10:.6f}} | lrm: 1.00 | "
              f"dt: 150ms | tok/sec: 12,345 | mfu: 1.5% | epoch: 1 | remaining: 1s    ", end="", flush=True)
    print()
    print({BLOCK!r})
    """
    seen: list[Progress] = []
    result = await run_script(tmp_path, body, on_progress=seen.append)
    assert result.status == "ok", result.error
    steps = [p.step for p in seen]
    assert steps == sorted(set(steps)) and steps[-1] == 5  # in order, each once, the last one included
    assert seen[-1].tok_per_s == 12345 and seen[-1].fraction == pytest.approx(1.0)


async def test_a_failing_callback_does_not_break_the_run(tmp_path: Path) -> None:
    def broken(progress: Progress) -> None:
        raise ValueError("display broke")

    body = f"print('step 00001 (50.0%) | loss: 1.0')\nprint({BLOCK!r})\n"
    result = await run_script(tmp_path, body, on_progress=broken)
    assert result.status == "ok"


# --------------------------------------------------------------------------- environment
PARENT_ENV = {
    "PATH": "/usr/bin",
    "HOME": "/home/me",
    "LC_ALL": "C.UTF-8",
    "OMP_NUM_THREADS": "2",
    "ANTHROPIC_API_KEY": "sk-1",
    "GITHUB_TOKEN": "gh-1",
    "MY_SECRET": "s",
    "AWS_SECRET_ACCESS_KEY": "a",
    "AWS_ACCESS_KEY_ID": "b",
    "UV_PUBLISH_TOKEN": "u",
    "NCCL_API_Key": "n",
    "DB_PASSWORD": "p",
    "GOOGLE_APPLICATION_CREDENTIALS": "/c.json",
    "EDITOR": "vim",
    "SSH_AUTH_SOCK": "/tmp/ssh",
    "NIGHTLAB_BUDGET_TOKENS": "999",
    "NIGHTLAB_EVENTS": "/stale",
    "CUDA_VISIBLE_DEVICES": "0,1",
}

ENV_CASES = [
    # (name, build_env keyword arguments, variables expected (value or None for absent))
    (
        "allow-list and secrets",
        dict(seed=3, budget_seconds=60),
        {
            "PATH": "/usr/bin",
            "HOME": "/home/me",
            "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "2",
            "ANTHROPIC_API_KEY": None,
            "GITHUB_TOKEN": None,
            "MY_SECRET": None,
            "AWS_SECRET_ACCESS_KEY": None,
            "AWS_ACCESS_KEY_ID": None,
            "UV_PUBLISH_TOKEN": None,
            "NCCL_API_Key": None,
            "DB_PASSWORD": None,
            "GOOGLE_APPLICATION_CREDENTIALS": None,
            "EDITOR": None,
            "SSH_AUTH_SOCK": None,
            "NIGHTLAB_SEED": "3",
            "NIGHTLAB_BUDGET_SECONDS": "60",
            "NIGHTLAB_BUDGET_TOKENS": None,
            "NIGHTLAB_EVENTS": "/run/events.jsonl",
            "PYTHONUNBUFFERED": "1",
            "CUDA_VISIBLE_DEVICES": "0,1",
        },
    ),
    (
        "token budget, slot GPUs",
        dict(seed=0, budget_tokens=1_000_000, cuda_visible_devices="3"),
        {"NIGHTLAB_BUDGET_TOKENS": "1000000", "NIGHTLAB_BUDGET_SECONDS": None, "CUDA_VISIBLE_DEVICES": "3"},
    ),
    ("fractional seconds", dict(seed=0, budget_seconds=2.5), {"NIGHTLAB_BUDGET_SECONDS": "2.5"}),
]


@pytest.mark.parametrize("name,kwargs,expected", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_build_env(name: str, kwargs: dict, expected: dict) -> None:
    env = build_env(PARENT_ENV, events_path="/run/events.jsonl", **kwargs)
    for key, value in expected.items():
        assert env.get(key) == value, key


def test_build_env_without_parent_gpus() -> None:
    env = build_env({"PATH": "/bin"}, events_path=None, seed=0)
    assert "CUDA_VISIBLE_DEVICES" not in env and "NIGHTLAB_EVENTS" not in env


@pytest.mark.parametrize("budget", [dict(budget_seconds=5), dict(budget_seconds=None, budget_tokens=4096)])
async def test_no_secret_reaches_the_script(tmp_path: Path, budget: dict) -> None:
    parent = dict(
        os.environ,
        ANTHROPIC_API_KEY="sk-test",
        GITHUB_TOKEN="gh",
        MY_SECRET="x",
        AWS_SECRET_ACCESS_KEY="y",
        UV_INDEX_TOKEN="z",
        LC_API_KEY="w",
    )
    body = f"import json, os\njson.dump(dict(os.environ), open('env.json', 'w'))\nprint({BLOCK!r})\n"
    result = await run_script(tmp_path, body, runner=Runner(parent_env=parent), **budget)
    assert result.status == "ok", result.error
    env = json.loads((tmp_path / "env.json").read_text())
    leaked = [k for k in env if any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET"))]
    assert leaked == (["NIGHTLAB_BUDGET_TOKENS"] if budget.get("budget_tokens") else [])
    assert env["PATH"] == parent["PATH"] and env["NIGHTLAB_SEED"] == "0"
    assert Path(env["NIGHTLAB_EVENTS"]) == tmp_path / "run" / "events.jsonl"


# --------------------------------------------------------------------------- compile check
COMPILE_CASES = [
    ("fine", "x = 1\n", None),
    ("syntax error", "x = 1\ndef f(:\n    pass\n", "train.py:2:"),
    ("indentation", "if True:\nx = 1\n", "train.py:2:"),
]


@pytest.mark.parametrize("name,source,expected", COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_compile_check(tmp_path: Path, name: str, source: str, expected) -> None:
    (tmp_path / "train.py").write_text(source)
    (tmp_path / "notes.md").write_text("def (: not python")
    error = compile_check(tmp_path, ["train.py", "notes.md"])
    if expected is None:
        assert error is None
    else:
        assert error is not None and error.startswith(expected)
    assert not (tmp_path / "__pycache__").exists()  # nothing written into the worktree


def test_compile_check_missing_file(tmp_path: Path) -> None:
    assert "train.py" in (compile_check(tmp_path, ["train.py"]) or "")


# --------------------------------------------------------------------------- concurrency and shutdown
async def test_two_runs_at_once_keep_their_own_progress(tmp_path: Path) -> None:
    body = f"""
    import time
    for step in range(4):
        time.sleep(0.1)
        print(f"step {{step:05d}} (50.0%) | loss: 1.0", flush=True)
    print({BLOCK!r})
    """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    seen_a: list[Progress] = []
    seen_b: list[Progress] = []
    runner = Runner(poll_interval_s=0.2)  # one Runner serving two slots
    a, b = await asyncio.gather(
        run_script(tmp_path / "a", body, runner=runner, on_progress=seen_a.append),
        run_script(tmp_path / "b", body, runner=runner, on_progress=seen_b.append),
    )
    assert a.status == b.status == "ok"
    assert [p.step for p in seen_a] == [p.step for p in seen_b] == [0, 1, 2, 3]
    assert a.log_path != b.log_path


async def test_cancelling_the_caller_kills_the_group(tmp_path: Path) -> None:
    task = asyncio.ensure_future(run_script(tmp_path, FORK_AND_HANG, deadline_s=30))
    pid_file = tmp_path / "pids.txt"
    while not pid_file.exists() or len(pid_file.read_text().split()) < 2:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(alive(int(pid)) for pid in pid_file.read_text().split())


async def test_following_a_run_does_not_spin(tmp_path: Path) -> None:
    """Following the files must cost the engine next to nothing: a busy loop (e.g. reacting to the
    watcher's own reads) would take a core from the training. Measured in CPU seconds, not wall time."""
    body = f"""
    import json, os, time
    events = open(os.environ["NIGHTLAB_EVENTS"], "a")
    for step in range(20):
        time.sleep(0.1)
        print(f"step {{step:05d}} (5.0%) | loss: 2.0", end="\\r", flush=True)
        events.write(json.dumps(dict(event="step", step=step, elapsed_s=0.1 * step, loss=2.0)) + "\\n")
        events.flush()
    print({BLOCK!r})
    """
    before = os.times()
    result = await run_script(tmp_path, body)
    after = os.times()
    assert result.status == "ok", result.error
    cpu = (after.user - before.user) + (after.system - before.system)
    assert cpu < 0.5 * result.total_s, f"the runner used {cpu:.2f} CPU s over a {result.total_s:.2f} s run"


@pytest.mark.parametrize("stage", ["", "smoke", "repeat-2"])
def test_kill_orphan_reads_every_runs_pgid_file(tmp_path, stage):
    """Recovery kills what a dead loop left running: the full run's, the smoke run's and the repeats'
    process groups (their pgid files sit in smoke/ and repeat-<k>/), and only inside the loop's folder."""
    import subprocess
    import time

    from nightlab.server.run.processes import PID_FILE, group_alive, kill_orphan

    run_dir = tmp_path / ".nightlab" / "runs" / "main" / "3"
    (run_dir / stage).mkdir(parents=True, exist_ok=True)
    worktree = tmp_path / ".nightlab" / "slots" / "main" / "0"
    worktree.mkdir(parents=True)
    proc = subprocess.Popen(["sleep", "60"], cwd=worktree, start_new_session=True)
    try:
        (run_dir / stage / PID_FILE).write_text(str(proc.pid))
        assert not kill_orphan(run_dir, tmp_path / "elsewhere")  # not in the loop's folder: someone else's
        assert group_alive(proc.pid)
        assert kill_orphan(run_dir, tmp_path / ".nightlab")
        proc.wait(timeout=10)
        assert not group_alive(proc.pid)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0)


def test_a_run_dies_with_the_loop(tmp_path):
    """The one moment no pgid file covers (right after the start) is covered by PR_SET_PDEATHSIG: a
    training whose loop process is killed -9 gets SIGKILL from the kernel."""
    import signal
    import subprocess
    import time

    script = textwrap.dedent(f"""
        import asyncio, sys
        sys.path[:0] = {sys.path!r}
        from pathlib import Path
        from nightlab.server.run.runner import Runner
        async def main():
            await Runner().run(Path({str(tmp_path)!r}), "sleep 60", log_path=Path({str(tmp_path / "run.log")!r}),
                               events_path=Path({str(tmp_path / "ev.jsonl")!r}), budget_seconds=1,
                               budget_tokens=None, seed=0, deadline_s=120)
        asyncio.run(main())
    """)
    loop = subprocess.Popen([sys.executable, "-c", script])
    pgid_file = tmp_path / "pgid"
    try:
        for _ in range(200):
            if pgid_file.exists() and pgid_file.read_text():
                break
            time.sleep(0.05)
        pid = int(pgid_file.read_text())
        os.kill(loop.pid, signal.SIGKILL)
        loop.wait(timeout=10)
        for _ in range(100):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break
            if stat[stat.rfind(")") + 2] == "Z":
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the training outlived its loop")
    finally:
        if loop.poll() is None:
            loop.kill()
