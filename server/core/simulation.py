"""What a policy's settings buy, measured on stand-in trainers: the engine's protocol (baseline repeats,
a candidate run while the policy says confirm, sigma and the paired spread pooled as the engine pools
them), seeded and pure.

- `simulate`: the unpaired model, metric N(0, 1) per run; 200 candidates against one baseline.
- `session` / `rates` / `compare`: the seeded model of a deterministic trainer: metric = the code's
  true value + a seed effect shared by every code version at that seed (`Model.seed_sd`) + a per-(code,
  seed) noise (`Model.noise_sd`), so a paired difference has sd noise_sd * sqrt 2 while one run varies
  by sqrt(seed_sd^2 + noise_sd^2). A kept candidate becomes the best, as in the engine.

Must not import: anything of nightlab but core (tests and benchmarks/paired_verdicts.py import this).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from nightlab.server.core.paired import SeededRuns, pooled
from nightlab.server.core.policy import Policy, make_policy
from nightlab.server.core.stats import NoiseSigma, estimate_sigma
from nightlab.server.core.types import RunStatus, Verdict


@dataclass
class SimResult:
    keep_rate: float  # share of candidates kept
    runs_per_candidate: float  # training runs per candidate, confirmations included


def simulate(policy: Policy, effect: float, trials: int = 200, seed: int = 0) -> SimResult:
    """The engine's protocol, with a stand-in trainer whose metric is N(0, 1) for the baseline's code:
    the baseline runs `policy.baseline_repeats` times, then `trials` candidates whose true metric is
    better by `effect` per-run sigmas (direction lower) each run until the policy stops confirming, all
    against that baseline. Sigma is pooled, as the engine does, from the baseline and every finished
    candidate with 2 or more runs. No seeds: the unpaired rule. Seeded and pure; ~0.1 s for 200 trials."""
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


@dataclass(frozen=True)
class Model:
    """A deterministic seeded trainer. Defaults: the CPU trainer at 400,000 tokens (issue 11: seed-to-seed
    sigma 0.074, paired differences of a real change 0.018)."""

    mu: float = 2.879
    seed_sd: float = 0.073  # the seed's effect (data order, initialisation), shared by all code versions
    noise_sd: float = 0.013  # per (code, seed): what a paired difference keeps, times sqrt 2
    # A share of candidates that share less of the seed's effect with the best (a new depth draws other
    # weights): their per-(code, seed) noise is structural_sd (DEPTH 4 -> 3: paired sd 0.041, 150k tokens)
    structural: float = 0.0
    structural_sd: float = 0.04

    @property
    def sigma(self) -> float:
        """One run's seed-to-seed sd."""
        return math.hypot(self.seed_sd, self.noise_sd)

    @property
    def paired_sd(self) -> float:
        return self.noise_sd * math.sqrt(2)


class _Pool:
    """Sums of squares and df, grown as experiments finish (the engine re-pools from the ledger; the
    same numbers, without the quadratic cost over a long session)."""

    def __init__(self) -> None:
        self.ss, self.df = 0.0, 0.0

    def add(self, s: NoiseSigma | None) -> None:
        if s is not None:
            self.ss, self.df = self.ss + float(s) ** 2 * s.df, self.df + s.df

    def sigma(self) -> NoiseSigma | None:
        return NoiseSigma(math.sqrt(self.ss / self.df), self.df) if self.df else None


def session(
    policy: Policy, model: Model, effect: float, candidates: int = 30, seed: int = 0, fill: bool = True
) -> tuple[int, int]:
    """One lineage: the baseline at seeds 0..R-1, then `candidates` candidates whose true metric is
    `effect` better (lower) than the current best's, each run at seeds 0, 1, ... while the policy says
    confirm, and (fill) a kept one on until `policy.fill_to` runs, as the engine's `_more` does.
    Returns (kept, candidate runs)."""
    rng = random.Random(seed)
    shared = [rng.gauss(0.0, model.seed_sd) for _ in range(64)]  # seed s's effect, the same for every code

    def run(true: float, s: int, sd: float = model.noise_sd) -> float:
        return true + shared[s] + rng.gauss(0.0, sd)

    best_true = model.mu
    best = SeededRuns([run(best_true, s) for s in range(policy.baseline_repeats)], range(policy.baseline_repeats))
    sigma_pool, paired_pool = _Pool(), _Pool()
    sigma_pool.add(estimate_sigma([best]))
    fill_to = getattr(policy, "fill_to", 0) if fill else 0
    kept = runs = 0
    for _ in range(candidates):
        true = best_true - effect
        sd = model.structural_sd if rng.random() < model.structural else model.noise_sd
        values: list[float] = []
        seeds: list[int] = []
        s_now = sigma_pool.sigma()
        noise = None if s_now is None else NoiseSigma(s_now, s_now.df, paired=paired_pool.sigma())
        while True:
            seeds.append(len(values))
            values.append(run(true, seeds[-1], sd))
            d = policy.decide_runs(values, best, noise, "lower", RunStatus.OK, seeds=seeds)
            if d.verdict == Verdict.CONFIRM or (d.verdict == Verdict.KEEP and d.paired and len(values) < fill_to):
                continue
            break
        runs += len(values)
        if len(values) > 1:
            sigma_pool.add(estimate_sigma([values]))
        if d.paired:
            paired_pool.add(pooled([], d.paired["differences"]))
        if d.verdict == Verdict.KEEP:
            kept += 1
            best_true, best = true, SeededRuns(values, seeds)
    return kept, runs


@dataclass
class Rates:
    keep_rate: float  # share of candidates kept, over all sessions
    runs_per_experiment: float  # candidate runs per candidate (the baseline's are not counted)


def rates(
    policy: Policy,
    model: Model,
    effect: float,
    sessions: int = 1000,
    candidates: int = 30,
    seed: int = 0,
    fill: bool = True,
) -> Rates:
    results = [session(policy, model, effect, candidates, seed + i, fill) for i in range(sessions)]
    total = sessions * candidates
    return Rates(sum(k for k, _ in results) / total, sum(r for _, r in results) / total)


RULES = {
    "paired (default)": ({}, True),
    "paired, no fill": ({}, False),
    "unpaired (paired = false)": ({"paired": False}, True),
}


def compare(model: Model, sessions: int = 1000, candidates: int = 30, seed: int = 0) -> list[dict]:
    """Each rule of RULES on the same model and the same seeded sessions: false keeps (no true change),
    power for a gain of one seed-sigma and of one paired sd, and the runs per experiment of each."""
    effects = {"no change": 0.0, "one seed-sigma": model.sigma, "one paired sd": model.paired_sd}
    rows = []
    for label, (options, fill) in RULES.items():
        policy = make_policy("noise", options)
        row: dict = {"rule": label}
        for name, effect in effects.items():
            r = rates(policy, model, effect, sessions, candidates, seed, fill)
            row[name] = (effect, r.keep_rate, r.runs_per_experiment)
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> list[str]:
    """compare's rows as lines: share kept (runs per experiment) for each effect."""
    out = []
    for row in rows:
        cells = [f"{k} {v[0]:.4f}: {v[1]:6.1%} kept ({v[2]:.2f} runs)" for k, v in row.items() if k != "rule"]
        out.append(f"{row['rule']:27s} " + " | ".join(cells))
    return out
