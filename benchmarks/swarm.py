"""Experiments per hour on a Ray cluster of 1, 2 and 4 stand-in workers, and a remote run's overhead.

A local cluster as processes of this machine: a head with no CPUs of its own (the loop, the driver, runs
there and trains nothing) and `ray start --address ... --num-cpus 1` worker nodes, added as the figures
go (1, then 2, then 4: each joins the running cluster). The loop is the real Engine in this process
(`[run] executor = "ray"`, the offline agent, the strict policy, `slots` = the number of workers) on a
throw-away workspace whose train.py sleeps a fixed time and prints its summary (a fixed-duration
trainer: no torch; the sleep needs no CPU, so on a 2-core machine 4 workers are not 4 machines only in
what surrounds the sleep: Python's start, Ray's worker, the loop's git and ledger writes).

  experiments/h  finished experiments per hour between the first and the last finish (the baseline,
                 which runs alone, is the first: its wait is left out)
  ideal          workers x 3600 / (trainer seconds)
  efficiency     experiments/h with N workers over N x experiments/h with 1

Then the time from a keep in one lineage to its port starting in another: two [[lineage]] tables (one
slot each, on the workers) in one loop process (loop/swarm.py), each its own tag; for every keep of
lineage "one" ported to "two", the seconds from one's keep to two's port starting (it includes the wait
for two's slot to finish the run it had: the port is queued first, not pre-empting).

Then the overhead of a remote run over a local one: the same trivial run (it prints its summary at once)
through the local Runner and through the RayLauncher (files through the object store, the node's
launcher, the log and events back), the median of several after a warm-up.

    .venv/bin/python benchmarks/swarm.py [--seconds 3] [--rounds 6] [--workers 1,2,4] [--repeats 9]

Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nightlab.protocol import events as ev
from nightlab.server.core.settings import load_settings
from nightlab.server.loop.engine import Engine
from nightlab.server.run.launcher import RunRequest
from nightlab.server.run.runner import Runner

RAY = str(Path(sys.executable).with_name("ray"))
TRAIN = """import os, time
X = 1.0            # the metric
time.sleep({seconds})  # the fixed duration (a literal: the offline agent tunes constants)
print("---")
print(f"val_bpb:          {{X:.6f}}")
print("training_seconds: 0.1")
"""
TOML = """[run]
command = "{python} train.py"
sandbox = "off"
[budget]
seconds = 1
timeout_seconds = 120
[policy]
name = "strict"
"""


def git(ws: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=ws, capture_output=True, text=True, check=True).stdout


def workspace(root: Path, seconds: float) -> Path:
    ws = root / "ws"
    ws.mkdir()
    (ws / "train.py").write_text(TRAIN.format(seconds=seconds))
    (ws / "prepare.py").write_text("# fixed\n")
    (ws / "program.md").write_text("lower X\n")
    (ws / "nightlab.toml").write_text(TOML.format(python=sys.executable))
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "init")
    return ws


# --------------------------------------------------------------------------- the cluster
class Cluster:
    """Nodes as `ray start --block` processes, each in a session of its own (ended whole at the end)."""

    def __init__(self, folder: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address, self.folder, self.procs = f"127.0.0.1:{port}", folder, []

    def start(self, name: str, cpus: int, head: bool = False) -> None:
        temp = self.folder / name
        temp.mkdir()
        argv = [RAY, "start", "--num-cpus", str(cpus), "--disable-usage-stats", "--block"]
        argv += ["--object-store-memory", str(80 << 20), "--temp-dir", str(temp)]
        argv += ["--head", "--port", self.address.rsplit(":", 1)[1], "--include-dashboard=false"] if head else []
        argv += [] if head else ["--address", self.address]
        self.procs.append(
            subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def wait_for_cpus(self, n: int, timeout: float = 120.0) -> None:
        import ray

        end = time.monotonic() + timeout
        while ray.cluster_resources().get("CPU", 0) < n:
            if time.monotonic() > end:
                raise SystemExit(f"the cluster did not reach {n} CPUs")
            time.sleep(0.2)

    def stop(self) -> None:
        sessions = {p.pid for p in self.procs}
        for _ in range(3):
            for proc in Path("/proc").iterdir():
                try:
                    if (
                        proc.name.isdigit()
                        and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) in sessions
                    ):
                        os.kill(int(proc.name), signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
            for p in self.procs:
                p.poll()
            time.sleep(0.5)


# --------------------------------------------------------------------------- the figures
def loop_rate(root: Path, address: str, workers: int, seconds: float, rounds: int) -> tuple[float, int]:
    """Experiments per hour of a loop with `workers` slots: (rate, experiments counted)."""
    folder = root / f"loop-{workers}"
    folder.mkdir()
    ws = workspace(folder, seconds)
    n = 1 + rounds * workers
    overrides = {"max_experiments": n, "executor": "ray", "ray_address": address, "slots": workers}
    engine = Engine(load_settings(ws, overrides))
    finished: list[float] = []
    engine.subscribe(lambda e: finished.append(time.monotonic()) if e["type"] == ev.EXPERIMENT_FINISHED else None)
    asyncio.run(engine.run())
    bad = [(e.number, str(e.status), e.error[:200]) for e in engine.ledger.experiments() if e.status == "crash"]
    if bad or len(finished) != n:
        raise SystemExit(f"{workers} workers: {len(finished)} of {n} finished; crashes {bad}")
    return (len(finished) - 1) / (finished[-1] - finished[0]) * 3600, len(finished) - 1


def port_latency(root: Path, address: str, seconds: float, rounds: int) -> list[float]:
    """Seconds from each keep of lineage "one" to its port starting in lineage "two"."""
    from nightlab.server.loop.swarm import Swarm

    folder = root / "lineages"
    folder.mkdir()
    ws = workspace(folder, seconds)
    toml = (ws / "nightlab.toml").read_text() + '\n[[lineage]]\nname = "one"\n\n[[lineage]]\nname = "two"\n'
    (ws / "nightlab.toml").write_text(toml)
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "two lineages")
    overrides = {"max_experiments": 1 + rounds, "executor": "ray", "ray_address": address, "slots": 1}
    swarm = Swarm(load_settings(ws, overrides))
    kept: dict[str, float] = {}
    started: dict[str, float] = {}

    def on_event(tag: str, event: dict) -> None:
        e = event.get("experiment") or {}
        if tag == "one" and event["type"] == ev.EXPERIMENT_FINISHED and e["status"] == "keep":
            kept[f"one #{e['number']}"] = time.monotonic()
        if tag == "two" and event["type"] == ev.EXPERIMENT_STARTED and e.get("port_of") in kept:
            started[e["port_of"]] = time.monotonic()

    swarm.subscribe(on_event)
    asyncio.run(swarm.run())
    return [started[k] - kept[k] for k in started]


def overhead(root: Path, address: str, repeats: int) -> tuple[float, float]:
    """Median seconds of one trivial run, locally and through the Ray launcher."""
    from nightlab.server.run.ray_launcher import RayLauncher

    work = root / "trivial"
    work.mkdir()
    (work / "train.py").write_text('print("---")\nprint("val_bpb:          1.000000")\n')
    local, remote = Runner(), RayLauncher(address=address, sandbox="off")

    def request(i: int, kind: str) -> RunRequest:
        out = root / "runs" / kind / str(i)
        return RunRequest(work, f"{sys.executable} train.py", out / "run.log", out / "events.jsonl", 0, 60.0, 1.0)

    times: dict[str, list[float]] = {"local": [], "ray": []}
    for i in range(repeats + 1):  # the first of each is a warm-up (a Ray worker process starts)
        for kind, launcher in (("local", local), ("ray", remote)):
            started = time.monotonic()
            result = asyncio.run(launcher.launch(request(i, kind)))
            assert result.status == "ok", result.error
            if i:
                times[kind].append(time.monotonic() - started)
    return statistics.median(times["local"]), statistics.median(times["ray"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="the trainer's fixed duration")
    ap.add_argument("--rounds", type=int, default=6, help="experiments per worker after the baseline")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=9, help="trivial runs each way for the overhead")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="nlswarm-", dir="/tmp"))  # short: Ray's socket paths are limited
    cluster = Cluster(root / "ray")
    (root / "ray").mkdir()
    import ray

    rows = []
    try:
        cluster.start("head", 0, head=True)
        time.sleep(0.5)
        while True:
            try:
                ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
                break
            except ConnectionError:
                time.sleep(0.5)
        started = 0
        for n in counts:
            while started < n:
                cluster.start(f"worker{started}", 1)
                started += 1
            cluster.wait_for_cpus(n)
            rate, counted = loop_rate(root, cluster.address, n, args.seconds, args.rounds)
            rows.append((n, rate, counted))
            print(f"  {n} worker(s): {rate:.0f} experiments/h over {counted}", flush=True)
        local_s, ray_s = overhead(root, cluster.address, args.repeats)
        ports = port_latency(root, cluster.address, args.seconds, args.rounds) if started >= 2 else []
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = rows[0][1] / rows[0][0]
    print(f"\nfixed-duration trainer: {args.seconds:g} s; {os.cpu_count()} cores on this machine\n")
    print(f"{'workers':>7} | {'experiments/h':>13} | {'ideal':>6} | {'x of 1 worker':>13} | {'efficiency':>10}")
    print("-" * 63)
    for n, rate, _ in rows:
        ideal = n * 3600 / args.seconds
        print(f"{n:>7} | {rate:>13.0f} | {ideal:>6.0f} | {rate / base:>13.2f} | {rate / (n * base):>10.0%}")
    print(f"\none trivial run, median of {args.repeats}: local {local_s:.3f} s, on Ray {ray_s:.3f} s,")
    print(f"remote overhead {ray_s - local_s:+.3f} s per run")
    if ports:
        median = statistics.median(ports)
        print(f"a keep in one lineage to its port starting in another: median {median:.2f} s, ", end="")
        print(f"max {max(ports):.2f} s over {len(ports)} ports (with a {args.seconds:g} s run ahead of it at most)")
    else:
        print("a keep in one lineage to its port starting in another: no port started (needs 2 workers)")
    print(json.dumps({"rows": rows, "local_s": local_s, "ray_s": ray_s, "port_s": ports}))


if __name__ == "__main__":
    main()
