"""A paper's claim as a number: the mean difference between two cells with a 95% interval."""
from __future__ import annotations

import math

import numpy as np


def welch_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """Mean difference a − b with the Welch t confidence interval (scipy.stats.ttest_ind).
    NaN bounds when either side has fewer than two values."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return diff, diff, diff
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(level)
    return diff, float(ci.low), float(ci.high)


def bootstrap_interval(a, b, level: float = 0.95, resamples: int = 9999,
                       seed: int = 0) -> tuple[float, float, float]:
    """Mean difference a − b with a percentile bootstrap interval (scipy.stats.bootstrap), for
    bounded metrics (accuracy near 100%) where a t interval can leave the possible range."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return diff, diff, diff
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                          confidence_level=level, n_resamples=resamples, method="percentile",
                          vectorized=True, rng=np.random.default_rng(seed))
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _label(spec, which: str, value) -> str:
    key = "/".join(value) if isinstance(value, tuple) else str(value)
    return str((spec.get(f"{which}_labels") or {}).get(key, key))


def claim_pairs(spec, table, row_keys, col_keys, claim):
    """[(label, claimed cell, baseline cell)] for each row (`claim: {col, baseline}`) or each
    column (`claim: {row, baseline_row}`), and the claim's description."""
    def cell(r, c):
        return table.get(r, {}).get(c)

    if claim.get("row") is not None:
        r, b = (str(claim["row"]),), (str(claim["baseline_row"]),)
        pairs = [(_label(spec, "col", c), cell(r, c), cell(b, c)) for c in col_keys]
        return pairs, f"{_label(spec, 'row', r)} − {_label(spec, 'row', b)}"
    c, b = tuple(str(claim["col"]).split("/")), tuple(str(claim["baseline"]).split("/"))
    pairs = [(_label(spec, "row", r), cell(r, c), cell(r, b)) for r in row_keys]
    return pairs, f"{_label(spec, 'col', c)} − {_label(spec, 'col', b)}"


def claim_lines(spec, table, row_keys, col_keys, claim) -> list[str]:
    pairs, what = claim_pairs(spec, table, row_keys, col_keys, claim)
    out = [f"**Claim check** ({what}; mean difference of the reported metric with a 95% Welch "
           "interval over replicates):", ""]
    for label, a, b in pairs:
        if a is None or b is None or not a.n or not b.n:
            out.append(f"- {label}: not enough finished runs")
            continue
        diff, lo, hi = welch_interval(a.values, b.values)
        interval = f"[{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else "[no interval: n < 2]"
        out.append(f"- {label}: {diff:+.2f} {interval} (n={a.n} vs {b.n})")
    return out
