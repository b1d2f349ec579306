"""The statistics of the noise-aware policy, pure maths: the pooled per-run noise sigma
(`estimate_sigma`, a `NoiseSigma` that carries its degrees of freedom) and Student's t quantiles for a
sigma estimated from few runs (`t_quantile`, with the regularized incomplete beta behind its CDF).
The paired statistics (differences at shared seeds) are in paired.py.

Must not import: anything but the standard library (policy.py imports this, not the other way round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from statistics import NormalDist, fmean


class PolicyError(Exception):
    """A bad policy setting or a bad input to its statistics. Defined here so that the statistics can
    raise it without importing policy.py; policy.py re-exports it."""


class NoiseSigma(float):
    """A per-run noise sigma that remembers its degrees of freedom (`df`, math.inf when taken as exact).

    A float everywhere (arithmetic, formatting, JSON); `estimate_sigma` returns one so that the engine
    passes the df to `decide_runs` without knowing about it. A plain float reaching `decide_runs` is
    given the fewest df it could have (see NoisePolicy.decide_runs)."""

    df: float
    # The spread of paired differences (candidate minus best at the same seed) pooled over the
    # lineage's earlier comparisons, when the engine has one: it reaches the policy with the sigma.
    paired: NoiseSigma | None

    def __new__(cls, value: float, df: float = math.inf, paired: NoiseSigma | None = None) -> NoiseSigma:
        self = super().__new__(cls, value)
        self.df = df
        self.paired = paired
        return self


def estimate_sigma(
    groups: Sequence[Sequence[float | None]], prior: float | None = None, prior_weight: float = 0
) -> NoiseSigma | None:
    """Pooled standard deviation of groups of runs of the SAME code, or None without a group of 2 runs.

    Each group of n >= 2 finite values adds its squared deviations from its own mean and n - 1 degrees
    of freedom, so groups with different true means (baseline, confirmed candidates) pool correctly.
    `prior` (a sigma) with `prior_weight` (in pseudo degrees of freedom) shrinks the variance toward it."""
    if prior_weight < 0 or (prior is not None and not (math.isfinite(prior) and prior >= 0)):
        raise PolicyError(f"prior must be a sigma >= 0 and prior_weight >= 0, got {prior!r}, {prior_weight!r}")
    ss, df = 0.0, 0
    for group in groups:
        xs = [float(v) for v in group if v is not None and math.isfinite(v)]
        if len(xs) >= 2:
            m = fmean(xs)
            ss += sum((x - m) ** 2 for x in xs)
            df += len(xs) - 1
    if df == 0:
        return None
    if prior is not None and prior_weight > 0:
        return NoiseSigma(math.sqrt((ss + prior_weight * prior**2) / (df + prior_weight)), df + prior_weight)
    return NoiseSigma(math.sqrt(ss / df), df)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b): continued fraction, modified Lentz (Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return front * h / a


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def f_sf(x: float, d1: float, d2: float) -> float:
    """P(F > x) for Fisher's F with (d1, d2) degrees of freedom: how often a variance ratio this large
    comes by chance when both variances are the same."""
    if x <= 0:
        return 1.0
    if math.isinf(d2):
        d2 = 1e9
    return _betainc(d2 / 2, d1 / 2, d2 / (d2 + d1 * x))


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (df may be fractional; math.inf gives the normal quantile)."""
    if not 0 < p < 1:
        raise PolicyError(f"a quantile needs 0 < p < 1, got {p}")
    if df == math.inf or df > 1e7:
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1 - p, df)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    # Cornish-Fisher start, then Newton steps kept inside a bracket that bisection would also keep.
    z = NormalDist().inv_cdf(p)
    t = z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, max(2 * t, 1.0)
    while _t_cdf(hi, df) < p:
        lo, hi = hi, 2 * hi
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    for _ in range(100):
        err = _t_cdf(t, df) - p
        lo, hi = (t, hi) if err < 0 else (lo, t)
        pdf = math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))
        step = t - err / pdf
        t = step if lo < step < hi else (lo + hi) / 2
        if abs(err) < 1e-14 or hi - lo < 1e-12 * max(1.0, t):
            break
    return t
