"""Keep / discard / crash: the strict policy as a table, and the policy registry."""
from __future__ import annotations

import math

import pytest

from nightlab.server.policy import Policy, PolicyError, StrictPolicy, make_policy, policy_names, register_policy

STRICT = [
    # candidate, best, direction, run status, verdict, part of the reason
    (1.0, None, "lower", "ok", "keep", "baseline"),
    (0.99, 1.0, "lower", "ok", "keep", "better than the best 1.000000 (-0.010000)"),
    (1.01, 1.0, "lower", "ok", "discard", "not better than the best 1.000000 (+0.010000)"),
    (1.0, 1.0, "lower", "ok", "discard", "equals the best"),
    (1.01, 1.0, "higher", "ok", "keep", "better"),
    (0.99, 1.0, "higher", "ok", "discard", "not better"),
    (0.5, 1.0, "lower", "crash", "crash", "status 'crash'"),
    (0.5, 1.0, "lower", "timeout", "crash", "status 'timeout'"),
    (None, None, "lower", "interrupted", "crash", "status 'interrupted'"),
    (None, 1.0, "lower", "ok", "crash", "no metric"),
    (math.nan, 1.0, "lower", "ok", "crash", "the metric is nan"),
    (math.inf, None, "higher", "ok", "crash", "the metric is inf"),
]


@pytest.mark.parametrize("candidate,best,direction,status,verdict,reason", STRICT)
def test_strict(candidate, best, direction, status, verdict, reason):
    got, why = make_policy("strict").decide(candidate, best, direction, status)
    assert got == verdict and reason in why


def test_bad_direction():
    with pytest.raises(PolicyError, match="direction must be lower or higher"):
        StrictPolicy().decide(1.0, 1.0, "down", "ok")


def test_registry():
    with pytest.raises(PolicyError, match="unknown policy 'noisy'; known policies: strict"):
        make_policy("noisy")

    class AlwaysKeep:
        name = "always"

        def __init__(self, options):
            self.options = options

        def decide(self, candidate, best, direction, run_status):
            return "keep", "always"

    register_policy("always", AlwaysKeep)
    p = make_policy("always", {"x": 1})
    assert isinstance(p, Policy) and p.options == {"x": 1} and "always" in policy_names()
    assert isinstance(make_policy("strict"), Policy)
