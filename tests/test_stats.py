"""experiments/stats.py against scipy / statsmodels on known examples."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from experiments import stats

# Two sides that ran the same 8 seeds: a seed moves both by the same large amount (initialisation),
# the treatment adds a small, consistent gain (the NB Table 1 situation).
SEED_EFFECT = np.array([-0.9, 0.4, 1.3, -0.2, 0.7, -1.1, 0.2, 0.6])
A = 95.0 + SEED_EFFECT + 0.05 + np.array([0.01, -0.01, 0.02, 0.0, 0.01, 0.01, -0.02, 0.0])
B = 95.0 + SEED_EFFECT


def test_paired_t_on_shared_seeds_is_far_narrower_than_welch():
    p, w = stats.paired(A, B), stats.welch(A, B)
    ci = sps.ttest_rel(A, B).confidence_interval(0.95)
    assert (p.test, w.test) == ("paired t", "Welch t")
    assert (p.ci_low, p.ci_high) == pytest.approx((ci.low, ci.high))
    assert p.ci_high - p.ci_low < 0.05 < 1.0 < w.ci_high - w.ci_low
    assert p.ci_low > 0 > w.ci_low                       # the gain shows only when paired


def test_welch_matches_scipy_on_a_known_example():
    c = stats.welch([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert c.effect == pytest.approx(2.0)
    assert c.ci_high - c.effect == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)   # t_0.975(2) se
    assert c.p == pytest.approx(sps.ttest_ind([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], equal_var=False).pvalue)


@pytest.mark.parametrize("is_paired", [True, False])
def test_tost_matches_statsmodels(is_paired):
    a, b = [10.1, 9.8, 10.3, 10.0, 9.9], [10.0, 9.9, 10.1, 10.2, 9.8]
    c = stats.tost(a, b, 0.5, is_paired)
    expected = (ttost_paired(np.array(a), np.array(b), -0.5, 0.5)[0] if is_paired
                else ttost_ind(np.array(a), np.array(b), -0.5, 0.5, usevar="unequal")[0])
    assert c.test == ("TOST paired" if is_paired else "TOST Welch")
    assert c.p == pytest.approx(expected) and c.p < 0.05
    assert stats.tost(a, b, 0.01, is_paired).p > 0.05     # a margin too tight to show


def test_holm_matches_statsmodels_and_skips_missing_p():
    p = [0.01, 0.04, float("nan"), 0.03, 0.2]
    expected = multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1]
    got = stats.holm(p)
    assert np.isnan(got[2])
    assert [got[0], got[1], got[3], got[4]] == pytest.approx(list(expected))


def test_bootstrap_only_from_ten_per_side():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n >= 10"):
        stats.bootstrap(rng.random(3), rng.random(3))
    small = stats.compare(99.5 + rng.random(3), 99.0 + rng.random(3), is_paired=False, ceiling=100.0)
    large = stats.compare(99.5 + rng.random(10), 99.0 + rng.random(10), is_paired=False, ceiling=100.0)
    assert (small.test, large.test) == ("Welch t", "bootstrap")


def test_detectable_effect_uses_the_observed_sd():
    c = stats.paired(A, B)
    from statsmodels.stats.power import TTestPower

    d = TTestPower().solve_power(nobs=8, alpha=0.05, power=0.8)
    assert c.mde == pytest.approx(d * np.std(A - B, ddof=1))


def test_one_replicate_gives_no_interval():
    assert np.isnan(stats.welch([1.0], [0.0, 1.0]).ci_low)
    assert stats.interval_text(stats.welch([1.0], [0.0, 1.0])).endswith("[no interval: n < 2]")
