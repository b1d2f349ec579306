"""Paired comparisons (common random numbers): a candidate's runs against the best's runs at the same
seeds. Most of the seed-to-seed variance (data order, initialisation) is shared by two code versions
run on one seed, so the difference candidate(seed s) - best(seed s) is far less noisy than either run:
on the CPU trainer at 400,000 tokens the seed-to-seed sigma is 0.074 and the paired differences of a
real change spread by 0.018.

`SeededRuns` carries a best's values with their seeds (a list everywhere, like NoiseSigma is a float);
`matched` pairs two seeded runs; `pooled` is the spread of paired differences over earlier comparisons
plus the current one, each about its own mean (every change has its own true effect); `PairedStats` is
what the noise policy decided from, as the ledger keeps it.

Must not import: anything of nightlab but core.stats (policy.py imports this module).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from statistics import fmean
from typing import Any

from nightlab.server.core.stats import NoiseSigma, f_sf


class SeededRuns(list):
    """A best's run values (a list of floats) that remembers the seed of each (`seeds`, or None when
    they are not known: an old record, or seeds and values that do not line up)."""

    seeds: list[int] | None

    def __init__(self, values: Iterable[float] = (), seeds: Sequence[int] | None = None):
        super().__init__(float(v) for v in values)
        self.seeds = [int(s) for s in seeds] if seeds is not None and len(seeds) == len(self) else None


def matched(
    candidate: Sequence[float], seeds: Sequence[int], best: Sequence[float], best_seeds: Sequence[int]
) -> tuple[list[int], list[float]]:
    """The seeds both have (in the candidate's order) and the differences candidate - best at each.
    A seed run twice by one side counts once (its first run): a pair is one seed."""
    if len(candidate) != len(seeds) or len(best) != len(best_seeds):
        return [], []
    at: dict[int, float] = {}
    for s, v in zip(best_seeds, best, strict=True):
        at.setdefault(int(s), float(v))
    common, diffs, seen = [], [], set()
    for s, v in zip(seeds, candidate, strict=True):
        if int(s) in at and int(s) not in seen:
            seen.add(int(s))
            common.append(int(s))
            diffs.append(float(v) - at[int(s)])
    return common, diffs


def _spread(diffs: Sequence[float]) -> tuple[float, int]:
    """Squared deviations about the group's own mean, and its degrees of freedom; (0, 0) for a group
    whose differences are all equal. Identical code gives d = 0 at every seed on a deterministic
    trainer: counting it would pull the pooled spread toward 0 and make later noise look significant."""
    if len(diffs) < 2 or max(diffs) == min(diffs):
        return 0.0, 0
    m = fmean(diffs)
    return sum((d - m) ** 2 for d in diffs), len(diffs) - 1


def pooled(history: Iterable[Sequence[float]], own: Sequence[float] = ()) -> NoiseSigma | None:
    """The sd of one paired difference, pooled over earlier comparisons' differences and this one's,
    with its degrees of freedom; None when no group has a spread (fewer than 2 unequal differences)."""
    ss, df = 0.0, 0
    for group in [*history, own]:
        g_ss, g_df = _spread([float(d) for d in group if d is not None and math.isfinite(d)])
        ss, df = ss + g_ss, df + g_df
    return NoiseSigma(math.sqrt(ss / df), df) if df else None


def combine(history: NoiseSigma | None, own: Sequence[float]) -> NoiseSigma | None:
    """`pooled` from a history already pooled (a NoiseSigma with its df) and this comparison's differences."""
    g_ss, g_df = _spread(own)
    if history is None or not math.isfinite(history.df) or history.df <= 0:
        return NoiseSigma(math.sqrt(g_ss / g_df), g_df) if g_df else None
    ss, df = float(history) ** 2 * history.df + g_ss, history.df + g_df
    return NoiseSigma(math.sqrt(ss / df), df)


WIDER_P = 0.01  # a candidate's own spread this unlikely under the pooled one: judged by its own (0.05 cost
# 4 points of power for one-seed-sigma gains when every change shares the seed alike: 0.01 costs 1)


def spread_for(history: NoiseSigma | None, own: Sequence[float]) -> tuple[NoiseSigma | None, bool]:
    """The sd to judge this comparison by, and whether it is its own: the pooled one (history and own),
    unless its own spread is wider than the history's beyond chance (an F test at WIDER_P). Changes differ:
    a learning rate shares the seed's initialisation with the best (paired sd 0.003 at 150,000 tokens),
    a new depth draws other weights (0.041): judged by a pool of the first kind, noise in the second would
    look significant."""
    g_ss, g_df = _spread(own)
    if (
        g_df
        and history is not None
        and history > 0
        and f_sf(g_ss / g_df / float(history) ** 2, g_df, history.df) < WIDER_P
    ):
        return NoiseSigma(math.sqrt(g_ss / g_df), g_df), True
    return combine(history, own), False


@dataclass
class PairedStats:
    """A paired comparison as the policy judged it (the ledger keeps `record()`)."""

    seeds: list[int]
    diffs: list[float]  # candidate - best at each seed, in metric units
    sd: NoiseSigma | None  # of one difference, pooled; None before any spread is measured
    t: float | None  # improvement / (sd / sqrt n), positive = better

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return fmean(self.diffs) + 0.0  # + 0.0: no "-0" in the reason

    @property
    def df(self) -> float | None:
        return None if self.sd is None else self.sd.df

    def record(self) -> dict[str, Any]:
        return {
            "rule": "paired",
            "seeds": list(self.seeds),
            "differences": [round(d, 9) for d in self.diffs],
            "mean": self.mean,
            "sd": None if self.sd is None else float(self.sd),
            "t": self.t,
            "df": self.df,
            "n": self.n,
        }


def history_of(decisions: Iterable[dict[str, Any]]) -> list[list[float]]:
    """The paired differences of earlier decisions (the ledger's `decision` dicts), for `pooled`."""
    out = []
    for d in decisions:
        paired = d.get("paired") if isinstance(d, dict) else None
        diffs = paired.get("differences") if isinstance(paired, dict) else None
        if isinstance(diffs, list) and all(isinstance(x, (int, float)) for x in diffs):
            out.append([float(x) for x in diffs])
    return out
