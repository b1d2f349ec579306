"""Lineages per hardware class and discoveries that spread with proof (issue 14, items 2 to 4, acceptance
4): `[[lineage]]` tables checked like every setting; a two-lineage loop on a real local Ray cluster
(tests/test_ray.py's: lineage "a" on the head's classA, "b" on the worker's classB) where a change kept
in "a" is ported to "b", linked to its origin, judged there, and counted replicated only once "b" kept
it; no idea is ported twice; each experiment records the node it ran on."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
from rich.console import Console

from nightlab.protocol.convert import experiment_payload
from nightlab.server.agents.prompt import user_prompt
from nightlab.server.cli.swarm import status_lines as swarm_status
from nightlab.server.cli.view import experiments_table
from nightlab.server.core.settings import SettingsError, load_settings
from nightlab.server.core.types import Experiment, ExperimentContext, ExperimentStatus, FileEdit, Proposal
from nightlab.server.core.validate import LineageSettings
from nightlab.server.loop import ports
from nightlab.server.loop.swarm import Swarm, lineage_settings
from support import cluster as support_cluster
from support.agents import Scripted
from support.cluster import ray_workspace as _workspace
from support.workspace import STAND_IN, git, knob, make_workspace, merge_toml

try:
    import ray
except ImportError:  # the ray extra is not installed: only the settings' checks run
    ray = None
needs_ray = pytest.mark.skipif(ray is None, reason="ray is not installed: pip install -e '.[dev,ray]' (the ray extra)")

pytestmark = pytest.mark.timeout(240)

TWO = """
[[lineage]]
name = "a"
resources = { classA = 1 }
focus = "learning rates"

[[lineage]]
name = "b"
resources = { classB = 1 }
budget_seconds = 2
slots = 1
focus = "initialisation and normalisation"
"""


def _text(table) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def _with(ws, extra: str):
    (ws / "nightlab.toml").write_text((ws / "nightlab.toml").read_text() + extra)
    return ws


# --------------------------------------------------------------------------------------------------
# the settings


def test_lineage_tables_are_read_and_none_means_one_loop(tmp_path):
    ws = make_workspace(tmp_path)
    assert load_settings(ws).lineages == ()
    s = load_settings(_with(ws, TWO))
    assert s.lineages == (
        LineageSettings("a", (("classA", 1.0),), focus="learning rates"),
        LineageSettings("b", (("classB", 1.0),), 2.0, None, 1, "initialisation and normalisation"),
    )
    b = lineage_settings(s, s.lineages[1])
    assert (b.tag, b.budget.mode, b.budget.seconds, b.run.slots, b.lineages) == ("b", "time", 2.0, 1, ())
    options = LineageSettings("g", (("num_cpus", 2.0), ("num_gpus", 1.0), ("classA", 1.0))).task_options()
    assert options == {"num_cpus": 2.0, "num_gpus": 1.0, "resources": {"classA": 1.0}}


@pytest.mark.parametrize(
    "extra, error",
    [
        ('[lineage]\nname = "a"\n', "lineage must be tables [[lineage]]"),
        ("[[lineage]]\nfocus = 'x'\n", "[lineage] name must not be empty"),
        ('[[lineage]]\nname = "a b"\n', "[lineage] name must be letters, digits"),
        ('[[lineage]]\nname = "a"\n[[lineage]]\nname = "a"\n', "[lineage] name names two lineages, got 'a'"),
        ('[[lineage]]\nname = "a"\ncolour = 1\n', "unknown key 'colour' in [lineage]"),
        ('[[lineage]]\nname = "a"\nbudget_seconds = 1\nbudget_tokens = 9\n', "two budgets: give one"),
        ('[[lineage]]\nname = "a"\nbudget_seconds = 0\n', "[lineage] budget_seconds must be a positive number"),
        ('[[lineage]]\nname = "a"\nslots = 0\n', "[lineage] slots must be 1 or more"),
        ('[[lineage]]\nname = "a"\nresources = 1\n', "[lineage] resources must be a table"),
        ('[[lineage]]\nname = "a"\nresources = { classA = "x" }\n', "[lineage] resources.classA must be a number"),
        ('[[lineage]]\nname = "a"\nresources = { num_gpus = -1 }\n', "[lineage] resources.num_gpus must be 0 or more"),
    ],
)
def test_bad_lineage_tables_say_what_to_fix(tmp_path, extra, error):
    ws = _with(make_workspace(tmp_path), "\n" + extra)
    with pytest.raises(SettingsError) as info:
        load_settings(ws)
    assert error in str(info.value) and "nightlab.toml" in str(info.value)


# --------------------------------------------------------------------------------------------------
# ports, one by one


class _Files:
    """A store as ports.port reads one: files by commit ("" is the head)."""

    def __init__(self, by_commit: dict[str, str], head: str = "head"):
        self.by_commit, self.head_commit = by_commit, head

    def read_file(self, path: str, commit: str = "") -> str:
        return self.by_commit[commit or self.head_commit]

    def head(self) -> str:
        return self.head_commit


def _lineage(tag: str, store: _Files):
    return SimpleNamespace(
        settings=SimpleNamespace(tag=tag, files=SimpleNamespace(editable=("train.py",))), store=store
    )


ORIGIN = "A = 1\nX = 1.0\nB = 2\n"


@pytest.mark.parametrize(
    "target, expected",
    [
        ("A = 1\nX = 1.0\nB = 3\n", "A = 1\nX = 0.5\nB = 3\n"),  # b's own change elsewhere: merged
        ("A = 1\nX = 0.8\nB = 2\n", "a #2 does not apply to b's best: hunk 1 of train.py (X = 1.0 -> 0.5)"),
        ("A = 1\nX = 0.5\nB = 2\n", "b's best already has a #2"),
    ],
)
def test_a_port_is_the_origins_change_merged_into_the_other_lineages_best(target, expected):
    exp = Experiment(2, "a", "halve X", parent_commit="p", commit="c")
    source = _lineage("a", _Files({"p": ORIGIN, "c": ORIGIN.replace("1.0", "0.5")}))
    proposal = ports.port(source, exp, _lineage("b", _Files({"head": target})))
    if isinstance(proposal, str):
        assert proposal.startswith(expected), proposal
        return
    assert (proposal.description, proposal.port_of, proposal.base) == ("port a #2: halve X", "a #2", "head")
    assert [(e.search, e.replace) for e in proposal.edits] == [(target, expected)]
    again = ports.port(source, replace(exp, port_of="a #2", tag="c"), _lineage("b", _Files({"head": target})))
    assert again.description == "port a #2: halve X"  # a port's keep carries its origin on, not itself


def test_the_prompt_shows_what_the_other_lineages_kept_and_the_focus():
    ctx = ExperimentContext(
        "lower X", {}, [], [], focus="initialisation", elsewhere=["gpu #12: Kaiming, -0.021 val_bpb, z 4.1"]
    )
    prompt = user_prompt(ctx, 5)
    assert "Kept by the other lineages" in prompt and "- gpu #12: Kaiming, -0.021 val_bpb, z 4.1" in prompt
    assert "This lineage's focus: initialisation." in prompt
    assert "other lineages" not in user_prompt(ExperimentContext("lower X", {}, [], []), 5)


class AfterThePort(Scripted):
    """b's agent: its one idea comes once a's keep has been ported to b (queued first in b by then)."""

    def __init__(self, proposals):
        super().__init__(proposals)
        self.ported = asyncio.Event()

    async def propose(self, ctx):
        await self.ported.wait()
        return await super().propose(ctx)


def _two_lineages(settings):
    """a keeps "halve X" (#2), then discards "X up a little"; b's agent proposes "count two steps" (a
    discard: the metric stays) once a's keep was ported to it. Runs the swarm; (swarm, what replicated_in
    said of "a #2" when b's port started and when it ended)."""
    agent_a = Scripted([knob("X", "1.0", "0.5", "halve X"), knob("X", "0.5", "0.7", "X up a little")])
    steps = FileEdit("train.py", 'num_steps:        1"', 'num_steps:        2"')
    agent_b = AfterThePort([Proposal("count two steps", [steps], agent="scripted")])
    swarm = Swarm(settings, agents={"a": agent_a, "b": agent_b})
    seen: dict = {"at_start": None, "at_keep": None}

    def on_event(tag, event):
        exp = event.get("experiment") or {}
        if tag == "a" and event["type"] == "experimentStarted" and exp["description"] == "halve X":
            seen["b_told"] = "halve X" in swarm.engines["b"].proposer.others()  # in flight anywhere
        kept = event["type"] == "experimentFinished" and exp["status"] == "keep" and exp["kind"] != "baseline"
        if tag == "a" and kept:  # a's keep of "halve X" (#2), not its baseline: b's agent answers after it
            agent_b.ported.set()  # the swarm's ports listener came first: the port is queued by now
        if tag == "b" and exp.get("port_of") == "a #2":
            key = "at_start" if event["type"] == "experimentStarted" else "at_keep"
            seen[key] = swarm.replicated_in("a", 2)

    swarm.subscribe(on_event)
    asyncio.run(swarm.run())
    return swarm, seen


def test_a_two_lineage_loop_here_ports_a_keep_and_replicates_it_only_after_the_second_keep(tmp_path):
    """The same story as on the cluster below, with the local executor (no ray needed)."""
    ws = make_workspace(tmp_path)
    (ws / "nightlab.toml").write_text(
        merge_toml((ws / "nightlab.toml").read_text(), '[policy]\nname = "strict"\n[run]\npropose_ahead = false\n')
    )
    ws = _with(ws, TWO.replace("budget_seconds = 2", "budget_seconds = 1"))
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two lineages")
    swarm, seen = _two_lineages(load_settings(ws, {"max_experiments": 3}))
    a, b = (swarm.engines[t].ledger.experiments() for t in ("a", "b"))
    story = [(e.tag, e.number, str(e.status), e.port_of, e.description) for e in a + b]
    assert [str(e.status) for e in a] == ["keep", "keep", "discard"] and all(not e.port_of for e in a), story
    port = next(e for e in b if e.port_of)
    assert (port.port_of, port.description, str(port.status), port.node) == ("a #2", "port a #2: halve X", "keep", "")
    assert seen == {"at_start": [], "at_keep": ["b"], "b_told": True}, story
    assert swarm.ports.offer("a", a[1]) == []  # b has it: never offered twice
    assert "node" not in _text(experiments_table(b)).split("\n", 2)[1]  # no node column for local runs


# --------------------------------------------------------------------------------------------------
# the swarm on the cluster
# A local cluster as tests/test_ray.py makes one (copied: a test module may not import another; these
# belong in tests/support/ once test_ray.py's owner moves them there).


cluster = pytest.fixture(scope="module")(support_cluster.cluster)


@needs_ray
def test_a_keep_in_one_lineage_is_ported_judged_and_replicated_in_the_other(tmp_path, cluster):
    """Acceptance 4: a keeps X 1.0 -> 0.5; b gets "port a #2" first in its queue, re-applied to its
    own best and kept by its own baseline; replicated appears only after that keep; nothing is ported
    back to a; every run records its node (a's on the head, b's on the worker)."""
    ws = _with(_workspace(tmp_path, STAND_IN), TWO.replace("budget_seconds = 2", "budget_seconds = 1"))
    toml = (ws / "nightlab.toml").read_text()
    (ws / "nightlab.toml").write_text(merge_toml(toml, f'[run]\nray_address = "{cluster.address}"\n'))
    settings = load_settings(ws, {"max_experiments": 3, "slots": 1})
    swarm, seen = _two_lineages(settings)

    a, b = (swarm.engines[t].ledger.experiments() for t in ("a", "b"))
    story = [(e.tag, e.number, str(e.status), e.port_of, e.description) for e in a + b]
    assert [str(e.status) for e in a] == ["keep", "keep", "discard"], story
    # the port comes first after b's baseline, or after the idea b's agent was drafting meanwhile
    assert sorted(e.port_of for e in b) == ["", "", "a #2"] and b[0].is_baseline, story
    port = next(e for e in b if e.port_of)
    assert [str(e.status) for e in b if not e.port_of] == ["keep", "discard"], story
    assert port.description == "port a #2: halve X" and port.status == ExperimentStatus.KEEP, story
    assert "X = 0.5" in swarm.engines["b"].store.read_file("train.py")  # b's own branch moved
    assert seen == {"at_start": [], "at_keep": ["b"], "b_told": True}  # replicated only once b kept it
    assert swarm.replicated_in("a", 2) == ["b"] and swarm.replicated_in("b", 3) == []
    assert all(not e.port_of for e in a)  # b's keep of the port is not offered back to its origin
    assert {e.node[-13:-1] for e in a} == {cluster.nodes["head"][:12]}, [e.node for e in a]
    assert {e.node[-13:-1] for e in b} == {cluster.nodes["worker"][:12]}, [e.node for e in b]
    # b's agent was told what a kept, in flight anywhere, and its focus
    ctx = swarm.engines["b"].agent.contexts[
        0
    ]  # asked before a's keep: what the others kept comes from the proposer now
    elsewhere = swarm.engines["b"].proposer.elsewhere()
    assert ctx.focus == "initialisation and normalisation" and elsewhere[0].startswith("a #2: halve X, -0.5")
    prompt = user_prompt(replace(ctx, elsewhere=elsewhere), 10)
    assert "Kept by the other lineages" in prompt and "- a #2: halve X" in prompt and "focus: initialisation" in prompt
    lines = swarm.status_lines()
    assert any(line.startswith("lineage b (classB=1): 3 experiments, best val_bpb 0.500000") for line in lines), lines
    assert "  a #2 replicated in b" in lines, lines
    # the clients: the payload links the port and names the node; `nightlab status` shows the lineages
    payload = experiment_payload(port.to_json())
    assert (payload.port_of, payload.node, payload.replicated_in) == ("a #2", port.node, [])
    origin = experiment_payload({**a[1].to_json(), "replicated_in": swarm.replicated_in("a", 2)})
    assert (origin.port_of, origin.replicated_in) == (None, ["b"])
    shown = swarm_status(ws)
    assert shown[0].startswith("lineage a: 3 experiments, best val_bpb 0.500000 (#2 halve X)"), shown
    assert shown[1].endswith("; 1 ports, kept: a #2"), shown
    head, worker = (f"({cluster.nodes[n][:12]}): CPU 1, {c} 1" for n, c in (("head", "classA"), ("worker", "classB")))
    assert any(line.endswith(head) for line in shown) and any(line.endswith(worker) for line in shown), shown
    table = _text(experiments_table(b))
    assert "node" in table and cluster.nodes["worker"][:12] in table and "port a #2: halve X" in table, table
    # what is in use: Ray's view of the freed resources lags the tasks' ends, so only its shape is checked
    assert re.fullmatch(r"in use: CPU [0-2]/2, classA [01]/1, classB [01]/1", shown[-1]), shown


def test_a_port_run_again_stays_a_port():
    """An interrupted port runs again (recovery, a lost node) as a port of the same origin."""
    from nightlab.server.loop.proposer import Proposer

    ledger = SimpleNamespace(get=lambda n: Experiment(n, "b", "port a #2: halve X", port_of="a #2"))
    proposer = Proposer(None, ledger, None, None, None, sigma=list, running=list, proposing=list, message=print)
    proposer.pending = [Proposal("port a #2: halve X", [], rerun_of=4), Proposal("own", [])]
    assert [p.port_of for p in (asyncio.run(proposer.next()), asyncio.run(proposer.next()))] == ["a #2", ""]


def test_nightlab_run_with_lineages_runs_them_all_and_status_shows_them(tmp_path):
    """`nightlab run` on a workspace with [[lineage]] tables (the local executor, the offline agent)."""
    ws = _with(make_workspace(tmp_path), '\n[[lineage]]\nname = "one"\n\n[[lineage]]\nname = "two"\n')
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two lineages")
    cli = [sys.executable, "-m", "nightlab.server.cli"]
    done = subprocess.run(
        [*cli, "run", "--plain", "--max-experiments", "2", "-w", str(ws)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "one #1 started: baseline" in done.stdout and "two #1 started: baseline" in done.stdout, done.stdout
    for tag in ("one", "two"):
        assert len((ws / f".nightlab/{tag}/results.tsv").read_text().splitlines()) == 3
    shown = subprocess.run([*cli, "status", "-w", str(ws)], capture_output=True, text=True, timeout=60).stdout
    assert "lineage one: 2 experiments, best val_bpb" in shown and "lineage two: 2 experiments" in shown, shown


def test_a_detached_swarm_stops_together_from_one_lineages_socket(tmp_path):
    """`nightlab run --detach` with lineages; `nightlab stop --tag one` ends the loop process: both."""
    ws = _with(make_workspace(tmp_path), '\n[[lineage]]\nname = "one"\n\n[[lineage]]\nname = "two"\n')
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two lineages")
    cli = [sys.executable, "-m", "nightlab.server.cli"]
    up = subprocess.run([*cli, "run", "--detach", "--max-experiments", "1000"], cwd=ws, capture_output=True, text=True)
    assert up.returncode == 0 and "tag one" in up.stdout, up.stdout + up.stderr
    pid = int(re.search(r"pid (\d+)", up.stdout).group(1))
    try:
        down = subprocess.run([*cli, "stop", "--tag", "one"], cwd=ws, capture_output=True, text=True, timeout=90)
        assert "has exited" in down.stdout + down.stderr, down.stdout + down.stderr
        log = (ws / ".nightlab/one/loop.log").read_text()
        assert "one loop stopped: stop requested" in log and "two loop stopped: stop requested" in log, log
    finally:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
