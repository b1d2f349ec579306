"""Keep / discard / crash / confirm rules, by name, so the loop's judgement is a setting, not code.

`strict` is autoresearch's rule: the first result (the baseline) is kept; afterwards only a result
strictly better than the best kept one. `noise` (the default) knows that identical code gives a
different metric on every run: the engine runs the baseline `baseline_repeats` times, the pooled
spread of repeated runs gives the per-run noise sigma (`estimate_sigma`, stats.py), and a candidate is kept only
when its improvement is large against the standard error of the difference; an ambiguous one is run
again with another seed ("confirm") up to `max_repeats` runs. A run that did not end ok, or has no
finite metric, is a crash under every policy.

Must not import: git, torch, the store, runner, ledger, agents or engine.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean
from typing import Any, Protocol, runtime_checkable

# The statistics (pure maths) are in stats.py; these names stay importable from here.
from nightlab.server.core.stats import NoiseSigma, PolicyError, estimate_sigma, t_quantile  # noqa: F401
from nightlab.server.core.types import RunStatus, Verdict

DEFAULT_POLICY = "noise"  # what [policy] name defaults to (settings.PolicySettings)


@dataclass
class Decision:
    """A policy's verdict on a candidate's runs so far, with the numbers behind it (the ledger keeps them)."""

    verdict: str  # keep | discard | crash | confirm (run the candidate again with another seed)
    reason: str  # one line a researcher understands, with the numbers
    delta: float | None  # mean(candidate) - mean(best), signed in metric units
    sigma: float | None  # the per-run noise sigma used
    z: float | None  # improvement / standard error of the difference (positive = better)
    repeats: int  # candidate runs so far


@runtime_checkable
class Policy(Protocol):
    name: str
    baseline_repeats: int  # how many times the engine runs the baseline

    def decide_runs(
        self,
        candidate: Sequence[float | None],
        best: list[float] | None,
        sigma: float | None,
        direction: str,
        run_status: str,
    ) -> Decision:
        """The verdict on a candidate's runs so far (the latest last) against the best's runs."""
        ...


def _check_direction(direction: str) -> None:
    if direction not in ("lower", "higher"):
        raise PolicyError(f"direction must be lower or higher, got {direction!r}")


def crash_reason(candidate: float | None, run_status: str) -> str | None:
    """Why a result is a crash whatever the policy, or None when it is a usable result."""
    if run_status != RunStatus.OK:
        return f"the run ended with status {run_status!r}"
    if candidate is None:
        return "the run printed no metric"
    if not math.isfinite(candidate):
        return f"the metric is {candidate}"
    return None


def _crash(candidate: Sequence[float | None], run_status: str) -> Decision | None:
    """A crash Decision when the latest run (or, defensively, an earlier one) is not a usable result."""
    values = list(candidate) or [None]
    why = crash_reason(values[-1], run_status)
    if why is None:
        bad = [i for i, v in enumerate(values) if crash_reason(v, RunStatus.OK)]
        why = f"run {bad[0] + 1}: {crash_reason(values[bad[0]], 'ok')}" if bad else None
    return Decision(Verdict.CRASH, why, None, None, None, len(candidate)) if why else None


# --------------------------------------------------------------------------------------------------
# Policies


class StrictPolicy:
    """autoresearch: keep the baseline, then only what is strictly better than the best kept result."""

    name = "strict"
    baseline_repeats = 1

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        if self.options:
            raise PolicyError(f"unknown option {sorted(self.options)[0]!r} for policy 'strict' (it takes none)")

    def decide(
        self, candidate: float | None, best: float | None, direction: str, run_status: str
    ) -> tuple[Verdict, str]:
        _check_direction(direction)
        why = crash_reason(candidate, run_status)
        if why:
            return Verdict.CRASH, why
        assert candidate is not None
        if best is None:
            return Verdict.KEEP, f"baseline: {candidate:.6f} is the first result"
        delta = candidate - best
        better = delta < 0 if direction == "lower" else delta > 0
        if better:
            return Verdict.KEEP, f"{candidate:.6f} is better than the best {best:.6f} ({delta:+.6f})"
        if delta == 0:
            return Verdict.DISCARD, f"{candidate:.6f} equals the best {best:.6f}"
        return Verdict.DISCARD, f"{candidate:.6f} is not better than the best {best:.6f} ({delta:+.6f})"

    def decide_runs(
        self,
        candidate: Sequence[float | None],
        best: list[float] | None,
        sigma: float | None,
        direction: str,
        run_status: str,
    ) -> Decision:
        """`decide` on the latest candidate value against the mean of the best's runs; sigma is ignored."""
        _check_direction(direction)
        latest = candidate[-1] if candidate else None
        best_mean = fmean(best) if best else None
        verdict, reason = self.decide(latest, best_mean, direction, run_status)
        delta = (
            latest - best_mean if verdict != Verdict.CRASH and best_mean is not None and latest is not None else None
        )
        return Decision(verdict, reason, delta, None, None, len(candidate))


def _g(x: float) -> str:
    """A metric difference with the digits that matter: -0.0031, +0.00035, -0.038."""
    exponent = int(f"{x:.1e}".split("e")[1])  # after rounding: 9.99e-05 counts as 1.0e-04
    return f"{x:+.{max(2, 1 - exponent)}f}" if x else "+0"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class NoisePolicy:
    """Keep only what beats the best by more than the run-to-run noise explains.

    z = improvement / (sigma * sqrt(1/n_candidate + 1/n_best)), sigma the pooled per-run sigma (floored
    at min_sigma). keep when z reaches the keep threshold and the candidate has min_repeats runs;
    discard below the confirm threshold or at max_repeats runs; otherwise confirm: the engine runs the
    candidate again with another seed and asks again with all its runs.

    Options ([policy] in nightlab.toml): repeats (baseline runs, 3), z (keep threshold, 2.0),
    confirm_z (below it: discard without confirming, 1.0), min_repeats (runs before a keep, 2),
    max_repeats (most runs of one candidate, 3), min_sigma (floor on sigma, in metric units, 0; when
    no sigma is measured yet it stands in as exact). With repeats = 1 and min_sigma = 0 there is no
    noise floor until a candidate is confirmed, and the rule is strict's.

    Design choices, measured with tests/test_noise_policy.py (200 candidates per baseline, metric
    N(mu, sigma), 1000 seeded sessions; false keeps = no true change, true keeps = a 3-sigma gain):
    - Student's t. z and confirm_z are normal quantiles (2.0 = one-sided 2.3 %), but a sigma from few
      runs is often far too small (from 2 runs, 1 df, it is under a tenth of the truth 8 % of the
      time) and then noise looks significant: taking the estimate as exact kept 8.8 % of no-op
      candidates with 2 baseline runs. So z is compared with Student's t quantiles at the same
      one-sided levels for the sigma's degrees of freedom (a pooled two-sample t-test, exact for
      normal noise): keeping needs 14.0 with 1 df, 4.5 with 2, 2.1 with 30. Shrinking toward a prior
      sigma needs a prior we do not have at the start, and inflating sigma would misreport the noise
      that the ledger and the agent see.
    - min_repeats = 2: a sigma that came out too small makes one-run gains look large; kept at once,
      they add no runs to the noise estimate, so it is never corrected and noise is kept all night.
      Confirming every keep refreshes sigma, and the new best's mean is then of 2+ runs, less of a
      lucky draw. Cost: one run per kept candidate. False keeps 4.1 % -> 2.1 %.
    - repeats = 3, not 2: with a baseline mean of 2 runs the standard error of a one-run candidate is
      1.22 sigma and a 3-sigma gain is kept under 89 % of the time, even with sigma known (7 % are
      discarded at the first look). A third baseline run, once, gives 92 %; lowering confirm_z to
      0.5 instead gets about 90 % (sigma known) for a fifth more runs on every candidate.
    Rates with the defaults: 2.1 % false keeps (1.16 runs per candidate), 92 % true keeps (2.0 runs).
    """

    name = "noise"
    # option: (default, check, what it must be)
    OPTIONS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
        "repeats": (3, lambda v: _is_int(v) and v >= 1, "a whole number >= 1 (baseline runs)"),
        "z": (2.0, lambda v: _is_num(v) and v > 0, "a number > 0 (keep threshold, in standard errors)"),
        "confirm_z": (1.0, _is_num, "a number <= z (below it a candidate is discarded, not confirmed)"),
        "max_repeats": (3, lambda v: _is_int(v) and v >= 1, "a whole number >= 1 (most runs of one candidate)"),
        "min_repeats": (2, lambda v: _is_int(v) and v >= 1, "a whole number >= 1 (runs before a candidate is kept)"),
        "min_sigma": (0.0, lambda v: _is_num(v) and v >= 0, "a number >= 0 (floor on the noise sigma)"),
    }

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = dict(options or {})
        for key, value in self.options.items():
            if key not in self.OPTIONS:
                raise PolicyError(f"unknown option {key!r} for policy 'noise'; known: {', '.join(self.OPTIONS)}")
            if not self.OPTIONS[key][1](value):
                raise PolicyError(f"policy 'noise' option {key} must be {self.OPTIONS[key][2]}, got {value!r}")
        o = {k: self.options.get(k, default) for k, (default, _, _) in self.OPTIONS.items()}
        if o["confirm_z"] > o["z"]:
            raise PolicyError(f"policy 'noise' option confirm_z ({o['confirm_z']}) must not exceed z ({o['z']})")
        if o["min_repeats"] > o["max_repeats"]:
            raise PolicyError(
                f"policy 'noise' option min_repeats ({o['min_repeats']}) must not exceed "
                f"max_repeats ({o['max_repeats']})"
            )
        self.baseline_repeats: int = o["repeats"]
        self.z_keep: float = float(o["z"])
        self.confirm_z: float = float(o["confirm_z"])
        self.max_repeats: int = o["max_repeats"]
        self.min_sigma: float = float(o["min_sigma"])
        self.min_repeats: int = o["min_repeats"]
        self._p_keep, self._p_confirm = NormalDist().cdf(self.z_keep), NormalDist().cdf(self.confirm_z)

    def thresholds(self, df: float) -> tuple[float, float]:
        """(keep, confirm) thresholds on z for a sigma with `df` degrees of freedom."""
        return t_quantile(self._p_keep, df), t_quantile(self._p_confirm, df)

    def decide_runs(
        self,
        candidate: Sequence[float | None],
        best: list[float] | None,
        sigma: float | None,
        direction: str,
        run_status: str,
    ) -> Decision:
        _check_direction(direction)
        crash = _crash(candidate, run_status)
        if crash:
            return crash
        cand = [float(v) for v in candidate if v is not None]  # all finite: _crash checked
        n_c, mean_c = len(cand), fmean(cand)
        if not best:
            spread = f" (mean of {n_c} runs, {', '.join(f'{v:.6f}' for v in cand)})" if n_c > 1 else ""
            return Decision(Verdict.KEEP, f"baseline: {mean_c:.6f} is the first result{spread}", None, None, None, n_c)
        n_b, delta = len(best), mean_c - fmean(best)
        improvement = (-delta if direction == "lower" else delta) + 0.0  # + 0.0: no "-0.0 sigma"
        if sigma is None:
            # min_sigma is a floor the user asserts, so it stands in for a sigma not measured yet, as exact
            sigma = NoiseSigma(self.min_sigma) if self.min_sigma > 0 else None
        s = None if sigma is None else max(float(sigma), self.min_sigma)

        def decision(verdict: Verdict, reason: str, z: float | None = None) -> Decision:
            return Decision(verdict, reason, delta, s, z, n_c)

        if not s:  # unknown, or 0: repeats that agree to the last digit make any difference real
            why = "noise floor unknown" if s is None else "no run-to-run noise (sigma 0)"
            if improvement > 0:
                return decision(Verdict.KEEP, f"kept: {_g(delta)} vs the best ({why}: strict rule)")
            return decision(Verdict.DISCARD, f"discarded: {_g(delta)} is not better than the best ({why}: strict rule)")
        # A plain float carries no df: assume the fewest it can have, the best's and this candidate's own
        # repeats (what a classic two-sample t-test would use), at least 1.
        df = getattr(sigma, "df", max(1, (n_b - 1) + (n_c - 1)))
        z = improvement / (s * math.sqrt(1 / n_c + 1 / n_b))
        verdict = self._verdict(z, n_c, df)
        runs = f"{n_c} runs each" if n_c == n_b else f"{n_c} run{'s' * (n_c > 1)} vs {n_b}"
        noise = f"sigma {s:.2g}" + ("" if df == math.inf else f" from {df:g} df")
        return decision(verdict, self._reason(verdict, delta, improvement, z, n_c, df, runs, noise), z)

    def _verdict(self, z: float, n_c: int, df: float) -> Verdict:
        keep_at, confirm_at = self.thresholds(df)
        if z >= keep_at and n_c >= self.min_repeats:
            return Verdict.KEEP
        if z < confirm_at or n_c >= self.max_repeats:
            return Verdict.DISCARD
        return Verdict.CONFIRM

    def _reason(
        self, verdict: Verdict, delta: float, improvement: float, z: float, n_c: int, df: float, runs: str, noise: str
    ) -> str:
        """The verdict in words, with the numbers behind it."""
        keep_at, confirm_at = self.thresholds(df)
        need = f"needs {keep_at:.1f}"
        if verdict == Verdict.KEEP:
            return f"kept: {_g(delta)} = {z:.1f} sigma over the best ({need}; {runs}, {noise})"
        if verdict == Verdict.CONFIRM:
            what = f"promising ({z:.1f} sigma)" if z >= keep_at else f"ambiguous ({z:.1f} sigma, {need})"
            return f"{what}: confirming with another seed (run {n_c + 1} of {self.max_repeats}; {noise})"
        if z < confirm_at:
            what = (
                "is within noise"
                if improvement > 0
                else "is worse than the best"
                if improvement < 0
                else "equals the best"
            )
            return f"discarded: {_g(delta)} {what} ({z:.1f} sigma, {need}; {runs}, {noise})"
        return (
            f"discarded: {_g(delta)} still ambiguous after {n_c} run{'s' * (n_c > 1)} "
            f"({z:.1f} sigma, {need}; {runs}, {noise})"
        )


# --------------------------------------------------------------------------------------------------
# Simulation: what a policy's settings buy, with a stand-in trainer whose metric is N(mu, sigma)


@dataclass
class SimResult:
    keep_rate: float  # share of candidates kept
    runs_per_candidate: float  # training runs per candidate, confirmations included


def simulate(policy: Policy, effect: float, trials: int = 200, seed: int = 0) -> SimResult:
    """The engine's protocol, with a stand-in trainer whose metric is N(0, 1) for the baseline's code:
    the baseline runs `policy.baseline_repeats` times, then `trials` candidates whose true metric is
    better by `effect` per-run sigmas (direction lower) each run until the policy stops confirming, all
    against that baseline. Sigma is pooled, as the engine does, from the baseline and every finished
    candidate with 2 or more runs. Seeded and pure; ~0.1 s for 200 trials."""
    rng = random.Random(seed)
    baseline = [rng.gauss(0.0, 1.0) for _ in range(policy.baseline_repeats)]
    groups, kept, runs = [baseline], 0, 0
    for _ in range(trials):
        candidate, noise = [rng.gauss(-effect, 1.0)], estimate_sigma(groups)
        while (d := policy.decide_runs(candidate, baseline, noise, "lower", RunStatus.OK)).verdict == Verdict.CONFIRM:
            candidate.append(rng.gauss(-effect, 1.0))
        kept += d.verdict == Verdict.KEEP
        runs += len(candidate)
        if len(candidate) > 1:
            groups.append(candidate)
    return SimResult(kept / trials, runs / trials)


# --------------------------------------------------------------------------------------------------
# Registry

PolicyFactory = Callable[[dict[str, Any]], Policy]
_REGISTRY: dict[str, PolicyFactory] = {"strict": StrictPolicy, "noise": NoisePolicy}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Make `make_policy(name)` call `factory(options)`."""
    _REGISTRY[name] = factory


def policy_names() -> list[str]:
    return sorted(_REGISTRY)


def make_policy(name: str, options: dict[str, Any] | None = None) -> Policy:
    """The policy `name` with its options (from nightlab.toml's [policy]); bad options raise PolicyError."""
    if name not in _REGISTRY:
        raise PolicyError(f"unknown policy {name!r}; known policies: {', '.join(policy_names())}")
    return _REGISTRY[name](dict(options or {}))
