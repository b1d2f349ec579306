"""Runs on a real local Ray cluster (issue 14, items 1 and 5): a head (`ray start --head`, resource
classA) and a worker node (a second `ray start --address`, classB) as processes on this machine, one CPU
each, standing for two machines. The Ray launcher runs the stand-in trainer there: the result, log, events
and progress come back; no secret of the driver's reaches training; cancel and the deadline leave no
process behind; a loop (the real Engine, in-process) whose worker node is killed mid-run records the
experiment as interrupted with its node, runs it again on the head, uses a worker that joins mid-run, and
loses and duplicates nothing; an attack of issue 11's catalogue is rejected on a node as it is locally.
Skipped, saying so, only where ray cannot be imported (`pip install -e '.[dev,ray]'`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nightlab.server.core.settings import SettingsError, load_settings
from nightlab.server.core.types import ExperimentStatus, RunStatus
from nightlab.server.loop.engine import Engine
from nightlab.server.loop.launch import rerun_lost, settings_launcher
from nightlab.server.run.launcher import JudgeRequest, RunRequest
from nightlab.server.run.sandbox import SandboxSpec, probe
from support import cluster as support_cluster
from support.agents import Scripted
from support.cluster import SECRET, _free_port, _wait_for
from support.cluster import ray_workspace as _workspace
from support.workspace import STAND_IN, committed, knob, make_workspace, merge_toml, trainer_workspace

try:
    import ray

    from nightlab.server.run.ray_launcher import LOST, RayLauncher, placement_of
except ImportError:  # the ray extra is not installed: only the settings' checks below run
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed: pip install -e '.[dev,ray]' (the ray extra)")
pytestmark = pytest.mark.timeout(240)


# --------------------------------------------------------------------------------------------------
# the settings


@pytest.mark.parametrize(
    "run, error",
    [
        ('executor = "slurm"', "[run] executor must be one of local | ray, got 'slurm'"),
        ('executor = "ray"\nray_address = "ray://head:10001"', "not Ray Client's ray://"),
        ('executor = "ray"\nray_address = "head"', '[run] ray_address must be "auto" or host:port'),
        ('executor = "ray"\nray_address = ""', "[run] ray_address must not be empty"),
    ],
)
def test_bad_executor_settings_say_what_to_fix(tmp_path, run, error):
    ws = make_workspace(tmp_path)
    (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), "[run]\n" + run))
    with pytest.raises(SettingsError) as info:
        load_settings(ws)
    assert error in str(info.value) and "nightlab.toml" in str(info.value)


def test_the_executor_and_address_come_from_the_file_or_the_flags(tmp_path):
    ws = make_workspace(tmp_path)
    assert (load_settings(ws).run.executor, load_settings(ws).run.ray_address) == ("local", "auto")
    s = load_settings(ws, {"executor": "ray", "ray_address": "10.0.0.5:6379"})
    assert (s.run.executor, s.run.ray_address) == ("ray", "10.0.0.5:6379")
    with pytest.raises(SettingsError, match="option executor: "):
        load_settings(ws, {"executor": "dask"})


@needs_ray
def test_the_ray_executor_builds_the_ray_launcher_with_the_sandbox_of_the_settings(tmp_path):
    ws = make_workspace(tmp_path)
    s = load_settings(ws, {"executor": "ray", "ray_address": "10.0.0.5:6379"})
    said: list[str] = []
    launcher = settings_launcher(s, ws, "python train.py", said.append)
    assert isinstance(launcher, RayLauncher) and launcher.address == "10.0.0.5:6379"
    assert launcher.sandbox == "off" and ws.resolve() in launcher.spec.hide  # the node hides the repository
    assert len(said) == 1 and 'slots = "auto" counts this machine' in said[0]  # no cluster's size in "auto"
    said.clear()
    settings_launcher(load_settings(ws, {"executor": "ray", "slots": 4}), ws, "python train.py", said.append)
    assert said == []


def test_a_nodes_scratch_keeps_live_runs_and_sweeps_those_whose_worker_died(tmp_path):
    """A worker killed with its node never removes its run folder; the next run on the node does, and
    leaves alone a folder whose run still holds its lock (or one being made)."""
    from nightlab.server.run import remote

    live, dead, new = (tmp_path / f"run-{name}" for name in ("live", "dead", "new"))
    for folder in (live, dead, new):
        folder.mkdir()
    held = remote._hold(live)
    os.close(remote._hold(dead))  # its holder is gone
    assert remote.sweep(tmp_path) == ["run-dead"]
    assert live.exists() and new.exists() and not dead.exists()
    os.close(held)


# --------------------------------------------------------------------------------------------------
# the cluster: processes of this machine, each node in a session of its own so that all of it can be ended


cluster = pytest.fixture(scope="module")(support_cluster.cluster)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------
# one run through the launcher

# A stand-in that reports a step (its pid as the loss: the test can find its process), prints what it was
# given, then waits for a ticket file the test writes (or, with HANG, never ends, a forked child with it).
TICKETED = """import json, os, sys, time
X = 1.0
HANG = False
TICKETS = {tickets!r}
ev = open(os.environ["NIGHTLAB_EVENTS"], "a")
step = {{"event": "step", "step": 1, "elapsed_s": 0.1, "loss": float(os.getpid()), "progress": 0.5}}
ev.write(json.dumps(step) + "\\n")
ev.flush()
print("ENV", sorted(os.environ))
if {hang}:
    os.fork()
    time.sleep(1000)
go = os.path.join(TICKETS, f"{{os.getpid()}}.go")
end = time.time() + 60
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.02)
print("---")
print(f"val_bpb:          {{X:.6f}}")
print("training_seconds: 0.1")
print("total_seconds:    0.2")
print("peak_vram_mb:     1.0")
print("num_steps:        1")
"""


def _request(folder: Path, workdir: Path, deadline_s: float = 60.0) -> RunRequest:
    return RunRequest(
        workdir=workdir,
        command=f"{sys.executable} train.py",
        log_path=folder / "run" / "run.log",
        events_path=folder / "run" / "events.jsonl",
        seed=0,
        deadline_s=deadline_s,
        budget_seconds=1,
    )


def _checkout(tmp_path: Path, x: float = 1.0, hang: bool = False) -> tuple[Path, Path]:
    tickets = tmp_path / "tickets"
    tickets.mkdir()
    work = tmp_path / "checkout"
    work.mkdir()
    text = TICKETED.format(tickets=str(tickets), hang=hang).replace("X = 1.0", f"X = {x}")
    (work / "train.py").write_text(text)
    (work / "prepare.py").write_text("# the fixed harness\n")
    return work, tickets


def test_a_run_on_the_cluster_streams_progress_and_brings_its_result_back(tmp_path, cluster, monkeypatch):
    """The files travel as bytes (the node runs in a folder of its own, not the driver's checkout),
    progress arrives while it trains (the run waits for a ticket the progress callback writes), and the
    log, events and node come back; the driver's secret does not reach training."""
    monkeypatch.setenv(SECRET, "sk-ant-api03-" + "s" * 30)
    work, tickets = _checkout(tmp_path, x=0.25)
    seen = []

    def on_progress(p):
        seen.append((p, json.loads((tmp_path / "run/events.jsonl").read_text())))  # the driver's copy, live
        (tickets / f"{int(p.loss)}.go").write_text("")

    launcher = RayLauncher(address=cluster.address, sandbox="off", resources={"classB": 1})
    result = asyncio.run(launcher.launch(_request(tmp_path, work), on_progress))
    assert result.status == RunStatus.OK, result.error
    assert result.metrics["val_bpb"] == 0.25 and [p.step for p, _ in seen] == [1]
    assert seen[0][1]["event"] == "step" and seen[0][1]["loss"] == seen[0][0].loss
    log = (tmp_path / "run/run.log").read_text()
    env = eval(log.split("ENV ", 1)[1].splitlines()[0])
    assert SECRET not in env and "ANTHROPIC_API_KEY" not in env and "NIGHTLAB_SEED" in env
    assert str(work) not in log and json.loads((tmp_path / "run/events.jsonl").read_text())["step"] == 1
    assert placement_of(tmp_path / "run")["node_id"] == cluster.nodes["worker"]  # classB: the worker node


def test_cancel_and_the_deadline_end_the_remote_training(tmp_path, cluster):
    """ray.cancel ends the task; its handler on the node ends the training's process group (a forked
    child included). A run past its deadline is a timeout, ended the same way."""
    work, _ = _checkout(tmp_path, hang=True)
    launcher = RayLauncher(address=cluster.address, sandbox="off", kill_grace_s=1.0)
    pids: list[int] = []

    async def cancelled():
        cancel = asyncio.Event()

        def on_progress(p):
            pids.append(int(p.loss))
            cancel.set()

        return await launcher.launch(_request(tmp_path / "a", work), on_progress, cancel)

    result = asyncio.run(cancelled())
    assert result.status == RunStatus.INTERRUPTED and "cancelled" in result.error, result.error
    timeout = asyncio.run(
        launcher.launch(_request(tmp_path / "b", work, deadline_s=3), lambda p: pids.append(int(p.loss)))
    )
    assert timeout.status == RunStatus.TIMEOUT, timeout.error
    assert len(pids) == 2
    _wait_for(lambda: not any(_alive(p) for p in pids), "the trainings to end", timeout=30)


def test_a_run_no_node_can_take_waits_says_so_and_can_be_cancelled(tmp_path, cluster, monkeypatch):
    """Resources no node has: the run waits in Ray's queue (a node that joins would take it), the launcher
    says what it waits for, and a cancel ends it before it started."""
    import nightlab.server.run.ray_launcher as rl

    monkeypatch.setattr(rl, "PENDING_NOTICE_S", 0.5)
    work, _ = _checkout(tmp_path)
    said: list[str] = []

    async def waits():
        cancel = asyncio.Event()

        def warn(text):
            said.append(text)
            cancel.set()

        launcher = RayLauncher(address=cluster.address, sandbox="off", resources={"classZ": 1}, warn=warn)
        return await launcher.launch(_request(tmp_path, work), cancel=cancel)

    result = asyncio.run(waits())
    assert result.status == RunStatus.INTERRUPTED and "before it started" in result.error, result.error
    assert len(said) == 1 and "'classZ': 1" in said[0] and "classB" in said[0], said
    assert placement_of(tmp_path / "run") is None


# --------------------------------------------------------------------------------------------------
# the loop on the cluster


def test_auto_slots_follow_the_cluster_what_its_nodes_hold(tmp_path, cluster):
    """`slots = "auto"` with the Ray executor: as many runs at once as the live nodes hold of the run's
    request (1 CPU each here: 2), never more, with no worktree made for a slot that never ran."""
    assert RayLauncher(address=cluster.address).capacity() == 2  # a CPU each
    assert RayLauncher(address=cluster.address, resources={"classB": 1}).capacity() == 1  # only the worker
    assert RayLauncher(address=cluster.address, resources={"classC": 1}).capacity() == 0  # no node has it
    ws = _workspace(tmp_path, STAND_IN.replace(ANCHOR, "time.sleep(3)\n" + ANCHOR))
    engine = Engine(load_settings(ws, {"max_experiments": 5, "ray_address": cluster.address}))
    running, most, said = set(), [0], []

    def on_event(event):
        kind = event["type"]
        if kind == "experimentStarted":
            running.add(event["experiment"]["number"])
            most[0] = max(most[0], len(running))
        elif kind == "experimentFinished":
            running.discard(event["experiment"]["number"])
        elif kind == "message":
            said.append(event["text"])

    engine.subscribe(on_event)
    asyncio.run(engine.run())
    exps = engine.ledger.experiments()
    assert engine.state == "stopped" and [str(e.status) for e in exps].count("crash") == 0, [e.error for e in exps]
    assert len(exps) == 5 and most[0] == 2, (most, said)
    assert "slots follow the Ray cluster: 2 runs at once" in said, said
    assert len(list((ws / ".nightlab/slots/main").iterdir())) <= 2  # the 62 others never made theirs


@pytest.mark.timeout(480)
def test_a_node_lost_mid_run_loses_nothing_and_a_node_that_joins_is_used(tmp_path, cluster):
    """Acceptance 2: the worker node's raylet is killed while it trains an experiment: that experiment is
    recorded as interrupted, naming the node, and runs again (on the head: the only node left); a node that
    joins while the loop runs takes a run at once; every experiment is once in the ledger, every final one
    once in results.tsv."""
    work, tickets = _checkout(tmp_path)
    ws = _workspace(tmp_path, (work / "train.py").read_text())
    # a run held on the head waits for the node started meanwhile to take the other slot's run: on a busy
    # machine starting a node and Ray placing a run there took over the 60 s deadline (CI): 180 s here
    toml = (ws / "nightlab.toml").read_text()
    (ws / "nightlab.toml").write_text(toml.replace("timeout_seconds = 60", "timeout_seconds = 180"))
    settings = load_settings(ws, {"max_experiments": 6, "ray_address": cluster.address, "slots": 2})
    assert settings.budget.timeout_seconds == 180
    engine = Engine(settings)
    rerun_lost(engine)
    runs_dir = ws / ".nightlab/runs/main"
    state: dict = {"victim": None, "recorded": False, "joined": None, "late_used": False, "pids": [], "held": []}

    def grant(*pids):
        for pid in pids:
            (tickets / f"{pid}.go").write_text("")

    async def control(event):
        """Holds the head's runs while a run is wanted elsewhere (so Ray must place one there): first on
        the worker, which is then killed mid-run, then on the node started while the re-run holds the head."""
        if event["type"] == "experimentFinished" and event["experiment"]["number"] == state["victim"]:
            state["recorded"] = True
            grant(*state["held"])  # the lost one is recorded (and its re-run queued): the head goes on
        if event["type"] != "progress":
            return
        n, pid = event["number"], int(event["progress"]["loss"])
        state["pids"].append(pid)
        node, exp = placement_of(runs_dir / str(n))["node_id"], engine.ledger.get(n)
        if state["victim"] is None and node == cluster.nodes["worker"]:
            state["victim"] = n
            cluster.kill_node("worker")  # mid-run: its training waits for a ticket that never comes
            return
        if state["victim"] and state["joined"] is None and exp.rerun_of == state["victim"]:
            state["joined"] = await asyncio.to_thread(cluster.start, "late", {"classB": 1})
        if node == state["joined"]:
            state["late_used"] = True
            grant(*state["held"])
        # before the kill: a run wanted on the worker; until the loss is recorded: the slots wait for it (a
        # run that finished meanwhile would start the last experiments before the re-run is queued); then
        # a run wanted on the node that joined
        wanted_elsewhere = not state["recorded"] or (state["joined"] and not state["late_used"])
        if node == cluster.nodes["head"] and wanted_elsewhere and not exp.is_baseline:
            state["held"].append(pid)  # the other slot's run can only go to another node now
            return
        grant(pid)

    async def main():
        pending: list[asyncio.Task] = []
        engine.subscribe(lambda event: pending.append(asyncio.ensure_future(control(event))))
        await engine.run()
        await asyncio.gather(*pending)

    asyncio.run(main())
    exps = engine.ledger.experiments()
    names = {v: k for k, v in cluster.nodes.items()}
    story = [
        (e.number, str(e.status), e.rerun_of, names.get((placement_of(runs_dir / str(e.number)) or {}).get("node_id")))
        for e in exps
    ]
    assert engine.state == "stopped", story
    victim = engine.ledger.get(state["victim"])
    assert victim.status == ExperimentStatus.INTERRUPTED and victim.error.startswith(LOST), victim.error
    assert cluster.nodes["worker"][:12] in victim.error
    assert victim.decision_reason == "its node died during the run; it runs again now, on the nodes left"
    lost_steps = (runs_dir / str(victim.number) / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lost_steps] == [1]  # what came while it trained is kept
    again = [e for e in exps if e.rerun_of == victim.number]
    assert len(again) == 1 and again[0].status.has_row(), story
    assert placement_of(runs_dir / str(again[0].number))["node_id"] == cluster.nodes["head"]
    nodes = {placement_of(runs_dir / str(e.number))["node_id"] for e in exps}
    assert state["joined"] in nodes, story  # the node that joined mid-run trained something
    numbers = [e.number for e in exps]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) == 6
    assert all(e.status.is_finished() for e in exps)
    rows = (ws / ".nightlab/main/results.tsv").read_text().splitlines()[1:]
    assert len(rows) == len([e for e in exps if e.status.has_row()]) == 5
    _wait_for(lambda: not any(_alive(p) for p in state["pids"]), "every training to end", timeout=30)


# --------------------------------------------------------------------------------------------------
# acceptance 5: the sandbox and the judge run on the node

ANCHOR = 'value = float("nan") if MODE == "nan" else X\n'


def test_nightlab_run_on_the_cluster(tmp_path, cluster):
    """`nightlab run --executor ray --ray-address ...`: the loop as users start it, each run on a node."""
    ws = make_workspace(tmp_path)
    cmd = [sys.executable, "-m", "nightlab.server.cli", "run", "--plain", "--max-experiments", "2"]
    cmd += ["--executor", "ray", "--ray-address", cluster.address, "--workspace", str(ws)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for n in (1, 2):
        assert placement_of(ws / ".nightlab/runs/main" / str(n))["node_id"] in cluster.nodes.values()
    rows = (ws / ".nightlab/main/results.tsv").read_text().splitlines()
    assert len(rows) == 3, rows


@needs_ray
def test_a_cluster_that_does_not_answer_stops_the_loop_saying_where(tmp_path):
    """Nothing at the address: the baseline cannot run, and the loop stops with the address in its words
    (in seconds: ray.init alone would retry for minutes)."""
    ws = make_workspace(tmp_path)
    address = f"127.0.0.1:{_free_port()}"
    cmd = [sys.executable, "-m", "nightlab.server.cli", "run", "--plain", "--max-experiments", "2"]
    cmd += ["--executor", "ray", "--ray-address", address, "--workspace", str(ws)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"nothing answers at {address}" in done.stdout.replace("\n", " "), done.stdout[-3000:]


@pytest.mark.slow
def test_the_judge_runs_on_the_node_and_catches_a_model_that_looks_ahead(tmp_path, cluster):
    """test_judge.py's test_a_model_that_looks_ahead_is_caught, through the Ray launcher: Nightlab's real
    trainer, its data cache prepared by the node, the judge run there on the committed files."""
    ws = trainer_workspace(tmp_path / "ws", edit=lambda text: text.replace("is_causal=True", "is_causal=False"))
    request = RunRequest(
        workdir=ws,
        command=f"{sys.executable} train.py",
        log_path=tmp_path / "run/run.log",
        events_path=tmp_path / "run/events.jsonl",
        seed=5,
        deadline_s=240,
        budget_tokens=4 * 4096,
        judge=JudgeRequest(files=committed(ws), deadline_s=240),
    )
    # the interpreter stays visible in the node's sandbox wherever it is (a clean clone's .venv under /tmp)
    spec = SandboxSpec(hide=(), readable=(Path(sys.prefix), Path(sys.base_prefix)))
    result = asyncio.run(RayLauncher(address=cluster.address, sandbox="auto", spec=spec).launch(request))
    assert result.status == RunStatus.CRASH
    assert result.error.startswith("invalid: the model looks ahead (logits at position "), result.error
    assert "val_bpb" not in result.metrics and placement_of(tmp_path / "run") is not None


def _attack_loop(tmp_path: Path, cluster, code: str, sandbox: str):
    train = STAND_IN.replace(ANCHOR, "CHANGE = False\nif CHANGE:\n" + _indent(code) + ANCHOR)
    ws = _workspace(tmp_path, train, sandbox)
    settings = load_settings(ws, {"max_experiments": 2, "ray_address": cluster.address})
    engine = Engine(settings, agent=Scripted([knob("CHANGE", False, True, "an innocent-looking change")]))
    asyncio.run(engine.run())
    exps = engine.ledger.experiments()
    assert [e.number for e in exps] == [1, 2] and exps[0].status == "keep", [
        (e.number, e.status, e.error) for e in exps
    ]
    return ws, exps[1]


def _indent(code: str) -> str:
    return "".join("    " + line + "\n" for line in code.strip("\n").splitlines())


@pytest.mark.skipif(probe() is not None, reason=f"no sandbox here: {probe()}")
def test_writes_to_the_users_tree_are_refused_on_a_node(tmp_path, cluster):
    """test_attacks.py's test_writes_to_the_users_tree_and_git_are_refused, through the Ray launcher: the
    node's sandbox hides the repository, so the write fails and the run is a crash that names it."""
    ws = tmp_path / "ws"
    code = f'open(os.path.join({str(ws)!r}, "notes.txt"), "w").write("pwned\\n")\nX = 0.5'
    ws, exp = _attack_loop(tmp_path, cluster, code, "auto")
    assert exp.status == "crash", (exp.status, exp.error)
    assert "notes.txt" in exp.error and ("Read-only file system" in exp.error or "No such file" in exp.error)
    assert (ws / "notes.txt").read_text() == "the user's own file\n"


def test_prepare_changed_and_restored_is_caught_on_a_node(tmp_path, cluster):
    """test_attacks.py's test_prepare_changed_and_restored_is_caught, unsandboxed, through the Ray
    launcher: the node's checkout is its own, and the node checks it as the loop checks its worktree."""
    code = (
        'harness = open("prepare.py").read()\n'
        'open("prepare.py", "w").write(harness + "EVAL_TOKENS = 1\\n")\n'
        'open("prepare.py", "w").write(harness)\nX = 0.5'
    )
    _, exp = _attack_loop(tmp_path, cluster, code, "off")
    assert exp.status == "crash"
    assert "prepare.py (written during the run, then restored)" in exp.error, exp.error
    assert exp.error.startswith("invalid: file(s) of the commit changed during the run on node "), exp.error
