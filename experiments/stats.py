"""The one statistics module of the suite (tables and claims ledger), on scipy / statsmodels.

A comparison of two samples a, b (values of one metric per replicate, keyed by seed or fold):
  - both sides ran the same replicates (same seed = same initialisation and batch order; same
    fold = same split): paired t on the per-replicate differences (scipy.stats.ttest_rel);
  - otherwise Welch t (scipy.stats.ttest_ind, equal_var=False); a percentile bootstrap
    (scipy.stats.bootstrap, p from a permutation test) only from n >= 10 per side, for a metric
    at its ceiling where a t interval would leave the possible range;
  - equivalence (|a - b| < margin): TOST, paired or Welch (statsmodels ttost_paired / ttost_ind);
  - a measurement without sampling noise (one net at initialisation): `deterministic`.
Intervals are two-sided 95%. `holm` adjusts a family of p values (statsmodels multipletests).
`detectable` is the smallest effect a test of this n and observed sd detects at 80% power.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower, TTestPower
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

TESTS = ("paired t", "Welch t", "TOST paired", "TOST Welch", "bootstrap", "deterministic")
LEVEL = 0.95
MIN_BOOTSTRAP_N = 10
POWER = 0.8


@dataclass(frozen=True)
class Comparison:
    test: str                  # one of TESTS
    effect: float              # mean(a) - mean(b) (paired: mean of the differences, the same number)
    ci_low: float
    ci_high: float
    p: float                   # difference tests: H0 effect = 0; TOST: H0 |effect| >= margin
    n_a: int
    n_b: int
    sd: float                  # sd of the differences (paired) or pooled sd of the sides (Welch)
    mde: float                 # smallest |effect| detectable at 80% power with this n and sd

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def _arrays(a, b):
    return np.asarray(a, float), np.asarray(b, float)


def paired(a, b) -> Comparison:
    """Paired t on a[i] - b[i] (a, b in the same replicate order)."""
    a, b = _arrays(a, b)
    d = a - b
    n, effect = len(d), float(d.mean())
    if n < 2:
        return Comparison("paired t", effect, math.nan, math.nan, math.nan, n, n, math.nan, math.nan)
    sd = float(d.std(ddof=1))
    if sd == 0:          # every replicate differs by the same amount: no sampling spread
        return Comparison("paired t", effect, effect, effect, 0.0 if effect else 1.0, n, n, 0.0, 0.0)
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(LEVEL)
    mde = TTestPower().solve_power(nobs=n, alpha=1 - LEVEL, power=POWER) * sd
    return Comparison("paired t", effect, float(ci.low), float(ci.high), float(res.pvalue), n, n, sd, float(mde))


def _pooled_sd(a, b) -> float:
    return float(math.sqrt((a.var(ddof=1) * (len(a) - 1) + b.var(ddof=1) * (len(b) - 1)) / (len(a) + len(b) - 2)))


def _ind_mde(a, b, sd) -> float:
    if sd == 0:
        return 0.0
    d = TTestIndPower().solve_power(nobs1=len(a), ratio=len(b) / len(a), alpha=1 - LEVEL, power=POWER)
    return float(d * sd)


def welch(a, b) -> Comparison:
    a, b = _arrays(a, b)
    effect = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Comparison("Welch t", effect, math.nan, math.nan, math.nan, len(a), len(b), math.nan, math.nan)
    sd = _pooled_sd(a, b)
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return Comparison("Welch t", effect, effect, effect, 0.0 if effect else 1.0, len(a), len(b), 0.0, 0.0)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(LEVEL)
    return Comparison("Welch t", effect, float(ci.low), float(ci.high), float(res.pvalue), len(a), len(b),
                      sd, _ind_mde(a, b, sd))


def bootstrap(a, b, seed: int = 0, resamples: int = 9999) -> Comparison:
    """Percentile bootstrap interval of mean(a) - mean(b), permutation-test p (n >= 10 per side)."""
    a, b = _arrays(a, b)
    if min(len(a), len(b)) < MIN_BOOTSTRAP_N:
        raise ValueError(f"bootstrap needs n >= {MIN_BOOTSTRAP_N} per side, has {len(a)} and {len(b)}")
    effect, sd = float(a.mean() - b.mean()), _pooled_sd(a, b)
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Comparison("bootstrap", effect, effect, effect, 0.0 if effect else 1.0, len(a), len(b), 0.0, 0.0)

    def diff(x, y, axis=-1):
        return x.mean(axis) - y.mean(axis)

    ci = stats.bootstrap((a, b), diff, confidence_level=LEVEL, n_resamples=resamples, method="percentile",
                         vectorized=True, rng=np.random.default_rng(seed)).confidence_interval
    p = stats.permutation_test((a, b), diff, n_resamples=resamples, vectorized=True,
                               rng=np.random.default_rng(seed)).pvalue
    return Comparison("bootstrap", effect, float(ci.low), float(ci.high), float(p), len(a), len(b),
                      sd, _ind_mde(a, b, sd))


def tost(a, b, margin: float, is_paired: bool) -> Comparison:
    """Equivalence |mean(a - b)| < margin: the larger of the two one-sided p values; the interval
    shown is the two-sided 95% one of the difference."""
    diff = paired(a, b) if is_paired else welch(a, b)
    name = "TOST paired" if is_paired else "TOST Welch"
    if not math.isfinite(diff.ci_low):
        return Comparison(name, diff.effect, math.nan, math.nan, math.nan, diff.n_a, diff.n_b, diff.sd, diff.mde)
    if diff.sd == 0:
        p = 0.0 if abs(diff.effect) < margin else 1.0
    else:
        x, y = _arrays(a, b)
        test = ttost_paired if is_paired else ttost_ind
        kwargs = {} if is_paired else {"usevar": "unequal"}
        p = float(test(x, y, -margin, margin, **kwargs)[0])
    return Comparison(name, diff.effect, diff.ci_low, diff.ci_high, p, diff.n_a, diff.n_b, diff.sd, diff.mde)


def compare(a, b, is_paired: bool, margin: float | None = None, ceiling: float | None = None) -> Comparison:
    """The test the design calls for: TOST when a margin is given (equivalence), else paired t
    for shared replicates, bootstrap for unpaired samples of n >= 10 at the metric's ceiling
    (within 2 units of it), Welch t otherwise."""
    if margin is not None:
        return tost(a, b, margin, is_paired)
    if is_paired:
        return paired(a, b)
    a, b = _arrays(a, b)
    at_ceiling = ceiling is not None and max(a.max(), b.max()) > ceiling - 2
    if at_ceiling and min(len(a), len(b)) >= MIN_BOOTSTRAP_N:
        return bootstrap(a, b)
    return welch(a, b)


def deterministic(effect: float) -> Comparison:
    return Comparison("deterministic", float(effect), float(effect), float(effect), math.nan, 1, 1, 0.0, 0.0)


def holm(pvalues) -> list[float]:
    """Holm-adjusted p values (statsmodels); NaN entries stay NaN and are not counted."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), math.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return [float(x) for x in out]


def interval_text(c: Comparison) -> str:
    """'+0.12 [-0.03, +0.27]' (no interval: n < 2 on a side)."""
    if not math.isfinite(c.ci_low):
        return f"{c.effect:+.2f} [no interval: n < 2]"
    return f"{c.effect:+.2f} [{c.ci_low:+.2f}, {c.ci_high:+.2f}]"
