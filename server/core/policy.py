"""Keep / discard / crash / confirm rules, by name, so the loop's judgement is a setting, not code.

`strict` is autoresearch's rule: the first result (the baseline) is kept; afterwards only a result
strictly better than the best kept one. `noise` (the default) knows that identical code gives a
different metric on every seed: the engine runs the baseline `baseline_repeats` times on seeds
seed, seed+1, ..., and a candidate is kept only when its improvement is large against the noise:
paired (by default) against the best's runs at the same seeds, else against the pooled per-run
sigma; an ambiguous one is run again on the next seed ("confirm") up to `max_repeats` runs. A run that
did not end ok, or has no finite metric, is a crash under every policy. The simulation is simulation.py.

Must not import: git, torch, the store, runner, ledger, agents or engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean
from typing import Any, Protocol, runtime_checkable

# The statistics (pure maths) are in stats.py; these names stay importable from here.
from nightlab.server.core.paired import PairedStats, matched, spread_for
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
    paired: dict[str, Any] | None = None  # the paired comparison behind it (PairedStats.record()), if paired


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
        *,
        seeds: Sequence[int] | None = None,
        best_seeds: Sequence[int] | None = None,
        paired_sd: float | None = None,
    ) -> Decision:
        """The verdict on a candidate's runs so far (the latest last) against the best's runs. `seeds`
        and `best_seeds`: the seed of each value, when known (a paired rule compares the same seeds);
        `paired_sd`: the spread of paired differences pooled over earlier comparisons (a NoiseSigma)."""
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
        *,
        seeds: Sequence[int] | None = None,
        best_seeds: Sequence[int] | None = None,
        paired_sd: float | None = None,
    ) -> Decision:
        """`decide` on the latest candidate value against the mean of the best's runs; sigma and seeds are ignored."""
        _check_direction(direction)
        latest = candidate[-1] if candidate else None
        best_mean = fmean(best) if best else None
        verdict, reason = self.decide(latest, best_mean, direction, run_status)
        delta = (
            latest - best_mean if verdict != Verdict.CRASH and best_mean is not None and latest is not None else None
        )
        return Decision(verdict, reason, delta, None, None, len(candidate))


def _g(x: float, extra: int = 0) -> str:
    """A metric difference with the digits that matter: -0.0031, +0.00035, -0.038 (extra: more)."""
    exponent = int(f"{x:.1e}".split("e")[1])  # after rounding: 9.99e-05 counts as 1.0e-04
    return f"{x:+.{max(2, 1 - exponent) + extra}f}" if x else "+0"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class NoisePolicy:
    """Keep only what beats the best by more than the noise explains; by default judged PAIRED.

    Paired (common random numbers): the candidate runs on the best's seeds and the rule judges the
    differences d_s = candidate(s) - best(s) at the seeds both have: t = improvement / (sd / sqrt n), sd
    that of one difference pooled over the lineage's earlier comparisons and this one's (paired.py),
    or its own when that is wider beyond chance (a new depth shares less with the best than a new
    learning rate), against Student's t at its df. On the CPU trainer a real gain of 0.109 bpb was
    z = 1.8 unpaired, t = 10 paired. After one run, a candidate not better at that seed (once a paired
    sd is known: below the confirm threshold) is discarded, the rest confirmed on the best's next
    seeds; with no spread measured nothing is kept. Identical code (d = 0 at every seed) is discarded
    and not pooled. A kept candidate is run up to max_repeats seeds (`fill_to`, engine `_more`), so
    later candidates find each seed they need (58 % vs 47 % of 2-paired-sd gains kept, a run per keep).
    Unpaired when no seed is shared, the best has under min_repeats seeds, its seeds gave identical
    values (sigma 0: seeds ignored), or `paired = false` (a trainer ignoring NIGHTLAB_SEED).

    Unpaired: z = improvement / (sigma * sqrt(1/n_c + 1/n_b)), sigma the pooled per-run sigma (floored
    at min_sigma), against Student's t at sigma's df (a sigma from 2 runs taken as exact kept 8.8 % of
    no-op candidates). Either rule: keep at the keep threshold with min_repeats runs (pairs); discard
    below the confirm threshold or at max_repeats runs; otherwise confirm. min_repeats 2 and repeats 3
    are the unpaired design (tests/test_noise_policy.py: false keeps 4.1 % -> 2.1 %, 3-sigma gains 92 %).
    Options ([policy]): paired (true), repeats (baseline runs, 3), z (keep, a normal quantile, 2.0),
    confirm_z (1.0), min_repeats (2), max_repeats (3), min_sigma (0; stands in for an unknown sigma).

    Simulated (simulation.py, tests/test_paired_policy.py; seed effect sd 0.073 shared by every code
    version + per-(code, seed) noise 0.013; 1000 sessions of 30 candidates), paired vs unpaired: false
    keeps 0.5 % vs 0.0 % (1.12 runs each); gains of one seed-sigma (0.074) kept 98 % vs 18 %, of one
    paired sd (0.018) 6 % vs 0.2 %.
    """

    name = "noise"
    # option: (default, check, what it must be)
    OPTIONS: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
        "paired": (True, lambda v: isinstance(v, bool), "true or false (judge differences at shared seeds)"),
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
        self.paired: bool = o["paired"]
        self.baseline_repeats: int = o["repeats"]
        self.z_keep: float = float(o["z"])
        self.confirm_z: float = float(o["confirm_z"])
        self.max_repeats: int = o["max_repeats"]
        self.min_sigma: float = float(o["min_sigma"])
        self.min_repeats: int = o["min_repeats"]
        # runs a kept candidate should have: the seeds a later candidate pairs with (engine `_more`)
        self.fill_to: int = self.max_repeats if self.paired else 0
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
        *,
        seeds: Sequence[int] | None = None,
        best_seeds: Sequence[int] | None = None,
        paired_sd: float | None = None,
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
        best_seeds = best_seeds if best_seeds is not None else getattr(best, "seeds", None)
        note = ""
        # sigma exactly 0: the best's seeds gave identical values, so the trainer ignores the seed (or
        # has no noise): nothing to pair, the unpaired rule's "no run-to-run noise" says it plainly
        if self.paired and seeds is not None and best_seeds is not None and not (sigma is not None and sigma == 0):
            history = paired_sd if paired_sd is not None else getattr(sigma, "paired", None)
            decided = self._paired(cand, list(seeds), list(best), list(best_seeds), history, direction)
            if isinstance(decided, Decision):
                return decided
            note = f" (unpaired: {decided})"
        d = self._unpaired(cand, best, sigma, direction)
        d.reason += note
        return d

    def _paired(
        self,
        cand: list[float],
        seeds: list[int],
        best: list[float],
        best_seeds: list[int],
        history: float | None,
        direction: str,
    ) -> Decision | str:
        """The paired rule, or why it cannot judge: no seed in common, the best has fewer seeds than
        min_repeats pairs need, or no spread measured by the last run."""
        common, diffs = matched(cand, seeds, best, best_seeds)
        reachable = min(self.max_repeats, len(set(best_seeds)))
        if not diffs:
            return "no seed in common with the best's runs"
        if reachable < self.min_repeats:
            return f"the best has runs at {len(set(best_seeds))} seed(s), {self.min_repeats} pairs are needed"
        pooled_history = history if isinstance(history, NoiseSigma) else None
        sd, own = spread_for(pooled_history, diffs)
        stats = PairedStats(common, diffs, sd, None)
        n, improvement = stats.n, (-stats.mean if direction == "lower" else stats.mean) + 0.0
        last = n >= reachable or len(cand) >= self.max_repeats
        nxt = min(set(best_seeds) - set(common), default=None)
        over = f"{_g(stats.mean, 1)} paired over {n} seed{'s' * (n > 1)}"
        confirming = f"confirming on the best's seed {nxt} (run {len(cand) + 1} of {self.max_repeats})"

        def decision(verdict: Verdict, reason: str) -> Decision:
            sd = None if stats.sd is None else float(stats.sd)
            return Decision(verdict, reason, stats.mean, sd, stats.t, len(cand), stats.record())

        same = all(d == 0 for d in diffs)
        what = "is identical to the best at every seed" if same else "is worse than the best"
        if stats.sd is None:  # no spread measured yet: only "is it better at all" can be asked
            if improvement > 0 and not last:
                return decision(Verdict.CONFIRM, f"promising: {over} (no paired noise measured yet); {confirming}")
            if improvement <= 0:
                return decision(Verdict.DISCARD, f"discarded: {over} {what}")
            return "the paired differences have no spread"
        stats.t = improvement / (float(stats.sd) / math.sqrt(n))
        keep_at, confirm_at = self.thresholds(stats.sd.df)
        numbers = f"t = {stats.t:.1f} (needs {keep_at:.1f}, {stats.sd.df:g} df{', its own spread' * own})"
        if stats.t >= keep_at and n >= self.min_repeats:
            return decision(Verdict.KEEP, f"kept: {over}, {numbers}")
        if stats.t < confirm_at:
            what = what if improvement < 0 or same else "is within noise" if improvement > 0 else "equals the best"
            return decision(Verdict.DISCARD, f"discarded: {over} {what}, {numbers}")
        if last:
            return decision(Verdict.DISCARD, f"discarded: {over} still ambiguous, {numbers}")
        kind = "promising" if stats.t >= keep_at else "ambiguous"
        return decision(Verdict.CONFIRM, f"{kind}: {over}, {numbers}; {confirming}")

    def _unpaired(self, cand: list[float], best: list[float], sigma: float | None, direction: str) -> Decision:
        n_c, n_b, delta = len(cand), len(best), fmean(cand) - fmean(best)
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
