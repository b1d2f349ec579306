"""The editor sees a swarm (issue 14, item 4): a workspace with [[lineage]] tables runs one loop process for
all its lineages; the language server follows one lineage per folder (the first, until
`nightlab.loop.lineage` chooses another), and every state it sends lists all the lineages with their
experiments, bests, ports and whether their loop runs, and, with the Ray executor, the cluster's nodes and
what the runs hold, as the loop process (the cluster's driver) last saw it.

Real parts: the real server over stdio (pytest-lsp), a real `nightlab run` process started from the editor
(the local executor) or from a terminal (on a real local Ray cluster of two nodes)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from support import cluster as support_cluster
from support.lsp import start_session, until
from support.workspace import STAND_IN, git, make_workspace, merge_toml

SERVER = ClientServerConfig(server_command=[sys.executable, "-m", "nightlab.server"])
pytestmark = pytest.mark.timeout(240)

TWO = '\n[[lineage]]\nname = "one"\nfocus = "learning rates"\n\n[[lineage]]\nname = "two"\nbudget_seconds = 2\n'
# a run of about 10 s: the loop looks at the cluster every 5 s, so it sees the run's slot taken
SLOW = STAND_IN.replace("value = float(", "time.sleep(10)\nvalue = float(", 1)


@pytest_lsp.fixture(config=SERVER)
async def client(lsp_client: LanguageClient):
    yield
    try:
        await asyncio.wait_for(lsp_client.shutdown_session(), 30)
    except asyncio.TimeoutError:  # one a failed test never initialized does not answer
        pass


async def command(client: LanguageClient, name: str, **args):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=[args]))


def lineages(state) -> dict:
    return {lin["name"]: lin for lin in state["lineages"]}


def two_lineages(tmp: Path) -> Path:
    ws = make_workspace(tmp)
    toml = merge_toml((ws / "nightlab.toml").read_text(), '[run]\npropose_ahead = false\n[policy]\nname = "strict"\n')
    (ws / "nightlab.toml").write_text(toml + TWO)
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two lineages")
    return ws


async def test_the_editor_follows_one_lineage_and_lists_them_all(client: LanguageClient, tmp_path):
    ws = two_lineages(tmp_path)
    await start_session(client, ws)
    before = await command(client, "nightlab.loop.status")
    assert before["tag"] == "one" and [lin["name"] for lin in before["lineages"]] == ["one", "two"], before
    assert not any(lin["running"] for lin in before["lineages"]) and before["cluster"] is None, before

    started = await command(client, "nightlab.loop.start", agent="offline", maxExperiments=3)
    assert started["tag"] == "one" and "the loop runs" in started["message"], started
    # Start ran the swarm: both lineages' loops in the one process; the editor follows the first
    state = await until(lambda: client.states and client.states[-1].get("pid") and client.states[-1], 30)
    assert state["tag"] == "one", state
    now = await command(client, "nightlab.loop.status")
    assert {n: lin["running"] for n, lin in lineages(now).items()} == {"one": True, "two": True}, now
    assert lineages(now)["one"]["focus"] == "learning rates", now

    await until(lambda: (ws / ".nightlab/two/experiments.jsonl").exists(), 60)
    shown = await command(client, "nightlab.loop.lineage", lineage="two")
    assert shown["tag"] == "two" and shown["pid"] == now["pid"], shown  # the same process
    assert shown["budget"] == "2 s" != now["budget"], (shown, now)  # lineage two's own budget
    assert client.states[-1]["tag"] == "two"  # every client's panel follows
    page = await client.protocol.send_request_async("nightlab/experiments", {"offset": 0, "limit": 50})
    assert page.experiments and {e.tag for e in page.experiments} == {"two"}, page

    with pytest.raises(Exception, match="no lineage 'three' in this workspace; it has one, two"):
        await command(client, "nightlab.loop.lineage", lineage="three")

    stopped = await command(client, "nightlab.loop.stop")  # the whole swarm: the lineages stop together
    assert stopped["state"] == "stopped", stopped
    after = await command(client, "nightlab.loop.status")
    assert not any(lin["running"] for lin in after["lineages"]), after
    counts = {lin["name"]: lin["experiments"] for lin in after["lineages"]}
    assert counts["one"] >= 1 and counts["two"] >= 1, counts
    one = lineages(after)["one"]
    assert one["best"] is not None and one["baseline"] is not None, one


cluster = pytest.fixture(scope="module")(support_cluster.cluster)


async def test_the_editor_sees_the_clusters_nodes_and_slots(client: LanguageClient, tmp_path, cluster):
    ws = support_cluster.ray_workspace(tmp_path, SLOW)
    toml = (ws / "nightlab.toml").read_text()
    (ws / "nightlab.toml").write_text(merge_toml(toml, f'[run]\nray_address = "{cluster.address}"\n'))
    cli = [sys.executable, "-m", "nightlab.server.cli"]
    up = subprocess.run(
        [*cli, "run", "--workspace", str(ws), "--detach", "--agent", "offline", "--max-experiments", "6"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    await start_session(client, ws)

    def cluster_state():
        s = client.states[-1] if client.states else None
        return s if s and s.get("cluster") and s["cluster"]["nodes"] else None

    state = await until(cluster_state, 60)  # the loop's first look at the cluster, in the hello or after
    nodes = {n["id"][:12]: n["resources"] for n in state["cluster"]["nodes"]}
    assert nodes.keys() == {cluster.nodes["head"][:12], cluster.nodes["worker"][:12]}, nodes
    head, worker = (nodes[cluster.nodes[name][:12]] for name in ("head", "worker"))
    assert head.get("classA") == 1 and worker.get("classB") == 1 and "classB" not in head, nodes
    assert state["cluster"]["address"] == cluster.address and state["cluster"]["error"] == "", state["cluster"]
    # a run holds its slot (1 CPU by default) while it trains: the change reaches the editor as it happens
    busy = await until(
        lambda: next((s for s in client.states if (s.get("cluster") or {}).get("inUse", {}).get("CPU")), None), 90
    )
    assert busy["cluster"]["inUse"]["CPU"] >= 1 and busy["cluster"]["total"]["CPU"] >= 2, busy["cluster"]
    await command(client, "nightlab.loop.stop")
