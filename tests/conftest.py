"""Shared fixtures. Every test gets a private data cache (NIGHTLAB_CACHE) built once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAINER = ROOT / "trainer"


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


def run_train(workspace: Path, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `python train.py` in a workspace the way a user would, and return the finished process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "train.py"], cwd=workspace, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
