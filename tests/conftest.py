"""Shared fixtures. Every test gets a private data cache (NIGHTLAB_CACHE) built once per session.
Shared helpers (not fixtures) live in tests/support/, which test modules import as `support.<module>`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest.register_assert_rewrite("support")  # helpers' asserts explain themselves like a test's

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "trainer"
TESTS = ROOT / "tests"
if str(TESTS) not in sys.path:  # pytest's default (prepend) import mode has put it there; importlib mode has not
    sys.path.insert(0, str(TESTS))

from support.fake_anthropic import fake_anthropic  # noqa: E402, F401  (the fixture, for every test module)


@pytest.fixture(scope="session", autouse=True)
def nightlab_cache(tmp_path_factory):
    """One data cache for the whole session, outside the user's ~/.cache."""
    cache = os.environ.get("NIGHTLAB_TEST_CACHE") or str(tmp_path_factory.mktemp("nightlab-cache"))
    old = os.environ.get("NIGHTLAB_CACHE")
    os.environ["NIGHTLAB_CACHE"] = cache
    yield Path(cache)
    if old is None:
        os.environ.pop("NIGHTLAB_CACHE", None)
    else:
        os.environ["NIGHTLAB_CACHE"] = old


@pytest.fixture(scope="session")
def prepare_module():
    """prepare.py imported as a module (it is a plain script in the template folder)."""
    sys.path.insert(0, str(TRAINER))
    try:
        import prepare

        yield prepare
    finally:
        sys.path.remove(str(TRAINER))


@pytest.fixture(scope="module", autouse=True)
def no_loop_left_behind(tmp_path_factory):
    """A loop process a module's tests started (the language server's Start is `nightlab run --detach`,
    which outlives the server by design) is killed once the module is done, so none trains into the next."""
    yield
    import signal
    import time

    from support.processes import processes_with

    base = str(tmp_path_factory.getbasetemp())
    ours = processes_with("nightlab.server.cli")
    left = [p for p in ours if base.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
    for pid in left:
        try:
            os.killpg(pid, signal.SIGTERM)  # a detached loop leads its own session and group
        except OSError:
            pass
    end = time.monotonic() + 10
    while left and time.monotonic() < end:
        left = [p for p in left if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
        time.sleep(0.1)
    for pid in left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "X"
