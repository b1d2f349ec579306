"""Slots that follow a Ray cluster (loop/elastic.py), without a cluster: the capacity the launcher reports
changes (a node joins, one goes) and the slots that wait for room go or wait; the loop's stop and the end
of another slot's loop release them. The real cluster's case is in tests/test_ray.py."""

from __future__ import annotations

import asyncio

import pytest

from nightlab.server.core.settings import load_settings
from nightlab.server.loop import elastic
from support.workspace import make_workspace, merge_toml


def test_only_ray_with_auto_slots_is_elastic(tmp_path):
    ws = make_workspace(tmp_path)
    local = load_settings(ws)
    assert not elastic.elastic(local) and len(elastic.slots(local)) == 1
    ray = load_settings(ws, {"executor": "ray"})
    specs = elastic.slots(ray)
    assert elastic.elastic(ray) and len(specs) == elastic.MAX_SLOTS
    assert specs[0].name == "cpu0" and specs[1].name == "cpu0.1"  # the first keeps its name (its device class)
    (ws / "nightlab.toml").write_text(merge_toml((ws / "nightlab.toml").read_text(), "[run]\nslots = 3\n"))
    assert len(elastic.slots(load_settings(ws, {"executor": "ray"}))) == 3  # a number is the user's: fixed


async def _scenario(monkeypatch):
    monkeypatch.setattr(elastic, "CAPACITY_S", 0.02)
    held = {"now": 1}
    said: list[str] = []
    stop = asyncio.Event()
    room = elastic.Capacity(lambda: held["now"], stop, said.append)
    first = await asyncio.wait_for(room.room(0), 2)
    second = asyncio.create_task(room.room(1))
    await asyncio.sleep(0.1)
    assert first and not second.done()  # the cluster holds one run: slot 1 waits
    held["now"] = 2  # a node joins
    assert await asyncio.wait_for(second, 2)
    held["now"] = 1  # it goes: slot 1 waits again before its next experiment
    await asyncio.sleep(0.1)
    third = asyncio.create_task(room.room(1))
    await asyncio.sleep(0.1)
    assert not third.done()
    room.end()  # another slot's loop ended (a limit, no more ideas): the waiting one ends too
    assert await asyncio.wait_for(third, 2) is False
    await room.close()
    stopped = elastic.Capacity(lambda: 0, stop, said.append)
    waiting = asyncio.create_task(stopped.room(0))
    await asyncio.sleep(0.1)
    stop.set()
    assert await asyncio.wait_for(waiting, 2) is False
    await stopped.close()
    return said


def test_waiting_slots_go_when_a_node_joins_and_end_with_the_loop(monkeypatch):
    said = asyncio.run(_scenario(monkeypatch))
    assert said == [
        "slots follow the Ray cluster: 1 run at once",
        "slots follow the Ray cluster: 2 runs at once (a node joined)",
        "slots follow the Ray cluster: 1 run at once (a node went)",
        "no node of the Ray cluster has what a run asks for: the slots wait for one to join",
    ]


def test_a_cluster_that_does_not_answer_keeps_the_slots_it_had(monkeypatch):
    async def scenario():
        monkeypatch.setattr(elastic, "CAPACITY_S", 0.02)
        answers = iter([2])

        def capacity():
            value = next(answers, None)
            if value is None:
                raise ConnectionError("the head went")
            return value

        room = elastic.Capacity(capacity, asyncio.Event(), lambda text: None)
        assert await asyncio.wait_for(room.room(1), 2)
        await asyncio.sleep(0.1)
        assert room.now == 2
        await room.close()
        # none at all from the start: one slot runs, and its launch says what is wrong with the cluster
        down = elastic.Capacity(lambda: 1 // 0, asyncio.Event(), lambda text: None)
        assert await asyncio.wait_for(down.room(0), 2) and down.now == 1
        await down.close()

    asyncio.run(scenario())


pytestmark = pytest.mark.timeout(60)
