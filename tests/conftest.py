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
