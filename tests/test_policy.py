"""Keep / discard / crash: the strict policy as a table, and the policy registry.

The noise policy has its own file, tests/test_noise_policy.py."""

from __future__ import annotations

import math

import pytest

from nightlab.server.core.policy import (
    Decision,
    Policy,
    PolicyError,
    StrictPolicy,
    make_policy,
    policy_names,
    register_policy,
)

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


@pytest.mark.parametrize("candidate,best,direction,status,verdict,reason", STRICT)
def test_strict_decide_runs(candidate, best, direction, status, verdict, reason):
    """decide_runs: the latest run against the mean of the best's runs, the same outcomes as decide."""
    p = make_policy("strict")
    assert p.baseline_repeats == 1
    best_runs = None if best is None else [best - 0.001, best + 0.001]
    d = p.decide_runs([0.7, candidate], best_runs, 0.01, direction, status)
    assert (d.verdict, d.sigma, d.z, d.repeats) == (verdict, None, None, 2) and reason in d.reason
    if verdict == "crash" or best is None:
        assert d.delta is None
    else:
        assert d.delta == pytest.approx(candidate - best)


def test_strict_takes_the_seeds_and_ignores_them():
    """The Policy protocol's seeds, best_seeds and paired_sd: strict judges the latest value as before."""
    d = StrictPolicy().decide_runs([0.99], [1.0, 1.0], None, "lower", "ok", seeds=[0], best_seeds=[0, 1], paired_sd=0.1)
    assert (d.verdict, d.paired) == ("keep", None) and d.delta == pytest.approx(-0.01)


def test_bad_direction():
    with pytest.raises(PolicyError, match="direction must be lower or higher"):
        StrictPolicy().decide(1.0, 1.0, "down", "ok")
    for name in policy_names():
        with pytest.raises(PolicyError, match="direction must be lower or higher"):
            make_policy(name).decide_runs([1.0], [1.0], 0.1, "down", "ok")


def test_registry():
    with pytest.raises(PolicyError, match="unknown policy 'noisy'; known policies: noise, strict"):
        make_policy("noisy")

    class AlwaysKeep:
        name = "always"
        baseline_repeats = 1

        def __init__(self, options):
            self.options = options

        def decide_runs(self, candidate, best, sigma, direction, run_status):
            return Decision("keep", "always", None, None, None, len(candidate))

    register_policy("always", AlwaysKeep)
    p = make_policy("always", {"x": 1})
    assert isinstance(p, Policy) and p.options == {"x": 1} and "always" in policy_names()
    assert isinstance(make_policy("strict"), Policy) and isinstance(make_policy("noise"), Policy)
