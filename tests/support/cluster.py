"""A real local Ray cluster for the tests (tests/test_ray.py, tests/test_swarm.py): nodes started with
`ray start` as processes of this machine, each in a session of its own so that all of it can be ended,
with custom resources standing for hardware classes (the head has classA, the worker classB).

    cluster = pytest.fixture(scope="module")(support.cluster.cluster)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support.workspace import git, make_workspace, merge_toml

try:
    import ray
except ImportError:  # the ray extra is not installed
    ray = None

RAY = str(Path(sys.executable).with_name("ray"))
SECRET = "NIGHTLAB_TEST_SECRET_KEY"  # never passed to a node: a run must not see it through Ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session_pids(sid: int) -> list[int]:
    """The live processes of session `sid` (zombies left out: they are gone, waiting to be reaped)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if proc.name.isdigit() and int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def _raylet(sid: int) -> int:
    for pid in _session_pids(sid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "raylet":
                return pid
        except OSError:
            pass
    raise AssertionError(f"no raylet in session {sid}")


@dataclass
class Cluster:
    address: str
    folder: Path
    sessions: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)  # name -> node id

    def start(self, name: str, resources: dict, head: bool = False) -> str:
        """A node: `ray start`, its own --temp-dir, in a session of its own; returns its node id."""
        temp = self.folder / name
        temp.mkdir()
        argv = [RAY, "start", "--num-cpus", "1", "--resources", json.dumps(resources), "--disable-usage-stats"]
        argv += ["--object-store-memory", str(80 << 20), "--temp-dir", str(temp), "--block"]
        if head:
            argv += ["--head", "--port", self.address.rsplit(":", 1)[1], "--include-dashboard=false"]
        else:
            argv += ["--address", self.address]
        env = {k: v for k, v in os.environ.items() if k != SECRET}
        proc = subprocess.Popen(
            argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.sessions.append(proc.pid)
        self.procs.append(proc)
        node = _wait_for_node(temp, proc)
        self.nodes[name] = node
        return node

    def kill_node(self, name: str) -> None:
        """The node's raylet, killed: the node dies as a machine that lost its power would, to Ray."""
        sid = self.sessions[list(self.nodes).index(name)]
        os.kill(_raylet(sid), signal.SIGKILL)

    def stop(self) -> None:
        for _ in range(3):
            for sid in self.sessions:
                for pid in _session_pids(sid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            for proc in self.procs:
                proc.poll()  # reaped: `ray start --block` is this process's child
            if not any(_session_pids(sid) for sid in self.sessions):
                return
            time.sleep(0.5)


def _wait_for_node(temp: Path, proc: subprocess.Popen, timeout: float = 90.0) -> str:
    """The node id a starting node writes to its session's logs, once its raylet is up."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"ray start exited {proc.returncode}"
        for path in temp.glob("session_*/logs/raylet.out"):
            for line in path.read_text(errors="replace").splitlines():
                if "Raylet of id, " in line:
                    return line.split("Raylet of id, ", 1)[1].split()[0].rstrip(",")
        time.sleep(0.2)
    raise AssertionError(f"no node came up in {temp}")


def cluster():
    if ray is None:
        pytest.skip("ray is not installed: pip install -e '.[dev,ray]' (the ray extra)")
    folder = Path(f"/tmp/nlray-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    folder.mkdir()
    c = Cluster(f"127.0.0.1:{_free_port()}", folder)
    try:
        c.start("head", {"classA": 1}, head=True)
        c.start("worker", {"classB": 1})
        ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
        _wait_for(lambda: ray.cluster_resources().get("CPU", 0) >= 2, "both nodes' CPUs")
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.stop()
        left = [pid for sid in c.sessions for pid in _session_pids(sid)]
        shutil.rmtree(folder, ignore_errors=True)
        assert left == [], f"processes of the cluster left running: {left}"


def _wait_for(condition, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def ray_workspace(tmp_path: Path, train: str, sandbox: str = "off") -> Path:
    """A stand-in workspace whose runs go to the Ray cluster (strict policy, no propose-ahead)."""
    ws = make_workspace(tmp_path, train, timeout=60)
    toml = (ws / "nightlab.toml").read_text().replace('sandbox = "off"', f'sandbox = "{sandbox}"')
    toml = merge_toml(toml, '[policy]\nname = "strict"\n[run]\npropose_ahead = false\nexecutor = "ray"\n')
    (ws / "nightlab.toml").write_text(toml)
    git(ws, "-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qam", "on the cluster")
    return ws
