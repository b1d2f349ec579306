"""Several slots at once: two experiments train side by side in their own worktrees, every one is
recorded exactly once, and the branch only moves forward through kept commits."""

import asyncio
import subprocess
import sys

import pytest

from nightlab.server.agents.offline import OfflineAgent
from nightlab.server.core.settings import load_settings
from nightlab.server.loop.engine import Engine
from nightlab.server.record.ledger import Ledger
from nightlab.server.run.slots import resolve_slots
from support.workspace import STAND_IN, git, make_workspace, merge_toml

SLOW = STAND_IN.replace("value = float", "time.sleep(1.5)\nvalue = float")


@pytest.mark.parametrize(
    "setting,gpus,expected",
    [
        ("auto", [], [("cpu0", None, None)]),
        ("auto", ["0", "1"], [("gpu0", "0", None), ("gpu1", "1", None)]),
        (2, [], [("cpu0", None, 1), ("cpu1", None, 1)]),
        (2, ["0", "1", "2"], [("gpu0", "0", None), ("gpu1", "1", None)]),
        (("cpu", "0"), ["0"], [("cpu0", "", None), ("gpu0", "0", None)]),
    ],
)
def test_resolve_slots(setting, gpus, expected):
    specs = resolve_slots(setting, gpus=gpus, cores=2)
    assert [(s.name, s.cuda_visible_devices, s.threads) for s in specs] == expected


def test_two_slots_run_side_by_side(tmp_path):
    ws = make_workspace(tmp_path, SLOW)
    (ws / "nightlab.toml").write_text(
        merge_toml((ws / "nightlab.toml").read_text(), '[run]\nslots = 2\n[policy]\nname = "strict"\n')
    )
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two slots")
    settings = load_settings(ws, {"max_experiments": 5})
    engine = Engine(settings, agent=OfflineAgent({}, 0))
    running, peak = set(), [0]

    def track(event):
        if event["type"] == "experimentStarted":
            running.add(event["experiment"]["number"])
            peak[0] = max(peak[0], len(running))
        elif event["type"] == "experimentFinished":
            running.discard(event["experiment"]["number"])

    engine.subscribe(track)
    asyncio.run(engine.run())
    assert engine.state == "stopped"
    assert peak[0] == 2, "two experiments should have trained at once"
    exps = Ledger(ws / ".nightlab" / "main").experiments()
    assert [e.number for e in exps] == [1, 2, 3, 4, 5]
    assert all(e.status in ("keep", "discard", "crash") for e in exps)
    assert {e.slot for e in exps[1:]} == {"cpu0", "cpu1"}
    descriptions = [e.description for e in exps]
    assert len(set(descriptions)) == len(descriptions)  # no duplicate idea in flight
    rows = (ws / ".nightlab/main/results.tsv").read_text().splitlines()[1:]
    assert len(rows) == 5
    # every experiment has its commit; the branch holds the kept ones, each a child of the one before
    refs = git(ws, "for-each-ref", "--format=%(refname)", "refs/nightlab/main").split()
    assert len(refs) == 5
    chain = git(ws, "log", "--format=%s", "nightlab/main").splitlines()
    kept = [e for e in exps if e.status == "keep"]
    assert [line.split(":")[0] for line in chain[: len(kept)]] == [f"nightlab #{e.number}" for e in reversed(kept)]
    for e in kept[1:]:
        assert git(ws, "rev-parse", f"{e.commit}^") == e.parent_commit
    # the slot worktrees are clean checkouts; the user's tree is untouched
    for i in (0, 1):
        assert git(ws / ".nightlab" / "slots" / "main" / str(i), "status", "--porcelain") == ""
    assert git(ws, "status", "--porcelain") == ""


@pytest.mark.slow
def test_two_cpu_slots_on_the_demo_workspace(tmp_path):
    """The real default experiment, two CPU slots (one core each), a tiny token budget."""
    ws = tmp_path / "demo"
    nightlab = [sys.executable, "-m", "nightlab.server.cli"]
    assert subprocess.run([*nightlab, "init", str(ws), "--profile", "cpu"], capture_output=True).returncode == 0
    toml = (ws / "nightlab.toml").read_text()
    toml = toml[: toml.index("[policy]")] + '[policy]\nname = "strict"\n'  # one run per candidate: quick
    (ws / "nightlab.toml").write_text(toml.replace('slots = "auto"', "slots = 2"))
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two slots")
    proc = subprocess.run(
        [*nightlab, "run", "--budget-tokens", "8192", "--max-experiments", "3", "--plain"],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exps = Ledger(ws / ".nightlab" / "main").experiments()
    assert [e.number for e in exps] == [1, 2, 3] and exps[0].status == "keep"
    assert {e.slot for e in exps[1:]} == {"cpu0", "cpu1"}
    starts = sorted((e.started_at, e.finished_at) for e in exps[1:])
    assert starts[1][0] <= starts[0][1], "the two candidates should have overlapped"
    assert len((ws / ".nightlab/main/results.tsv").read_text().splitlines()) == 4
