"""The engine's side of paired verdicts: the best's runs with their seeds, the noise pooled from the
ledger (the per-run sigma carrying the spread of earlier paired differences), the policy asked with
the seeds of a candidate's runs, and whether the engine runs it once more. Engine methods `best_values`,
`sigma` and `_more`, and verdict.judge, call these; the statistics are core/paired.py.

Must not import: pygls, rich, typer, an agent module, the store, the runner's processes, the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nightlab.server.core.paired import SeededRuns, history_of, pooled
from nightlab.server.core.policy import Decision, Policy
from nightlab.server.core.stats import NoiseSigma, estimate_sigma
from nightlab.server.core.types import Experiment, RunStatus, Verdict


def best_runs(best: Experiment) -> SeededRuns:
    """The best's run values with the seed of each (seeds None when its record does not line them up)."""
    return SeededRuns(best.run_values, best.seeds)


def noise(judged: Iterable[Experiment]) -> NoiseSigma | None:
    """The per-run sigma pooled over the judged experiments run more than once, carrying (`paired`)
    the spread of the paired differences their verdicts recorded."""
    judged = list(judged)
    sigma = estimate_sigma([g for g in (e.run_values for e in judged) if len(g) > 1])
    if sigma is None:
        return None
    return NoiseSigma(float(sigma), sigma.df, paired=pooled(history_of(e.decision for e in judged)))


def run_seeds(first: int, n: int) -> list[int]:
    """The seeds of an experiment's first n full runs: plan.execute runs run k at seed first + k."""
    return [first + k for k in range(n)]


def decide(
    policy: Policy,
    values: Sequence[float],
    seeds: Sequence[int],
    best: list[float] | None,
    sigma: float | None,
    direction: str,
) -> Decision:
    """The policy's verdict on a candidate's successful runs, with the seeds of each and of the best's."""
    seeds = list(seeds)[: len(values)]
    return policy.decide_runs(
        list(values),
        best,
        sigma,
        direction,
        RunStatus.OK,
        seeds=seeds if len(seeds) == len(values) else None,
        best_seeds=getattr(best, "seeds", None),
        paired_sd=getattr(sigma, "paired", None),
    )


def wants_more(policy: Policy, decision: Decision, runs: int) -> tuple[bool, str]:
    """Whether the engine runs the candidate again, and what it says: the policy's confirmation, or a
    paired keep with fewer runs than the policy's `fill_to`, so that the next candidates, run on the
    seeds of the new best, find a run of it at each one (a best with 2 seeds gives them 2 pairs at most).
    An unpaired keep is not filled: its trainer ignored the seeds, or its rule asked for no more runs."""
    if decision.verdict == Verdict.CONFIRM:
        return True, decision.reason
    fill_to = int(getattr(policy, "fill_to", 0) or 0)
    if decision.verdict == Verdict.KEEP and decision.paired is not None and runs < fill_to:
        return True, f"{decision.reason}; one more run ({runs + 1} of {fill_to}) so that later candidates pair on it"
    return False, ""
