"""Statistics of the experiment, checked against independent calculations."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from pyita.experiment import stats


def test_summarize_matches_numpy():
    x = np.array([-3.0, 1.0, 2.0, -4.0, 10.0])
    s = stats.summarize(x)
    a = np.abs(x)
    assert s["mae"] == pytest.approx(4.0)
    assert s["rmse"] == pytest.approx(math.sqrt((9 + 1 + 4 + 16 + 100) / 5))
    assert s["median"] == pytest.approx(3.0)
    assert s["iqr"] == pytest.approx(np.percentile(a, 75) - np.percentile(a, 25))
    assert (s["min"], s["max"], s["n"]) == (1.0, 10.0, 5)


def test_wilcoxon_exact_small_sample():
    # all 5 differences negative: exact two-sided p = 2/32
    assert stats.wilcoxon_p([-1, -2, -3, -4, -5]) == pytest.approx(0.0625)
    assert stats.min_wilcoxon_p(5) == pytest.approx(0.0625)
    assert stats.min_wilcoxon_p(10) == pytest.approx(2 / 1024)
    assert stats.wilcoxon_p([0, 0, 0]) == 1.0


def test_mannwhitney_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 50)
    assert stats.mannwhitney_p(a, b) == pytest.approx(sps.mannwhitneyu(a, b).pvalue)


def test_t_interval_and_p_match_scipy_paired_t():
    base = np.array([10.0, 11.0, 12.0, 10.5, 11.5])
    cond = base + np.array([-0.4, 0.1, -0.6, -0.2, -0.3])
    result = stats.compare("x", "E", base, cond)
    test = sps.ttest_rel(cond, base)
    interval = test.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == (pytest.approx(interval.low), pytest.approx(interval.high))
    assert result.t_p_trials == pytest.approx(test.pvalue)
    d = cond - base
    half = sps.t.ppf(0.975, 4) * d.std(ddof=1) / math.sqrt(5)
    assert result.ci_low == pytest.approx(d.mean() - half) and result.sd_difference == pytest.approx(d.std(ddof=1))
    # the percentage of the baseline: the same interval divided by the mean baseline MAE
    assert result.percent_difference == pytest.approx(100 * d.mean() / base.mean())
    assert result.percent_ci_low == pytest.approx(100 * result.ci_low / base.mean())
    assert result.percent_ci_high == pytest.approx(100 * result.ci_high / base.mean())
    assert test.pvalue > 0.05 and result.verdict.startswith("no detectable difference at 5 trials")
    assert stats.compare("x", "E", base, cond - 0.2).verdict == "better"   # same scatter, larger effect


def test_trials_needed_paired_t():
    # G*Power, one-sample/paired t, two-sided α = 0.05, power 0.8: d = 0.5 → 34, d = 0.8 → 15, d = 1 → 10
    for effect, expected in ((0.5, 34), (0.8, 15), (1.0, 10)):
        d = np.array([-1.0, 1.0, 0.0, 0.0]) / math.sqrt(2 / 3) + effect   # sd 1, mean = effect
        assert stats.trials_needed(d) == expected
        assert stats.trials_needed(-d) == expected
    # independently, by simulation: a t test with that many trials has power ≥ 0.8, with one fewer < 0.8
    rng = np.random.default_rng(0)
    for n, target in ((10, True), (9, False)):
        samples = rng.normal(1.0, 1.0, (20_000, n))
        power = np.mean(sps.ttest_1samp(samples, 0.0, axis=1).pvalue < 0.05)
        assert (power >= 0.8 - 0.01) if target else (power < 0.8)
    assert stats.trials_needed([0.0, 0.0]) is None
    assert stats.trials_needed([1.0]) is None
    assert stats.trials_needed([2.0, 2.0]) == 2


def test_verdicts():
    base = [10.0, 11.0, 12.0, 10.5, 11.5, 12.5, 10.2, 11.2]
    better = stats.compare("x", "E", base, [b - 1.0 + 0.01 * k for k, b in enumerate(base)])
    assert better.verdict == "better" and better.ci_high < 0
    worse = stats.compare("x", "E", base, [b + 2.0 for b in base])
    assert worse.verdict == "worse"
    noise = stats.compare("x", "E", base, [b + s for b, s in zip(base, [0.3, -0.2, 0.1, -0.4, 0.2, -0.1, 0.0, 0.05])])
    assert noise.verdict.startswith("no detectable difference at 8 trials")


def test_pooled_structures_never_decide_a_verdict():
    """The README's old `quick` case: all 4 per-trial differences negative and a tiny per-structure p, but the
    trials scatter: the trial-level t interval contains 0, so no verdict (the old rule said "better")."""
    rng = np.random.default_rng(0)
    base_pooled = rng.uniform(5, 10, 160)
    cond_pooled = base_pooled - rng.uniform(0.0, 0.5, 160)
    base = [0.46, 0.53, 0.44, 0.46]
    cond = [0.43, 0.51, 0.43, 0.46 - 0.0001]
    result = stats.compare("x", "F", base, cond, base_pooled, cond_pooled)
    assert result.wilcoxon_p_structures < 1e-10 and result.wilcoxon_p_trials == pytest.approx(0.125)
    assert result.ci_low < 0 < result.ci_high
    assert result.verdict.startswith("no detectable difference at 4 trials; insufficient trials: ")
    assert result.verdict.endswith(f"{result.trials_needed} needed for the observed effect at 80 % power")
    assert result.trials_needed > 4


def test_one_trial_gives_no_verdict():
    result = stats.compare("x", "E", [10.0], [5.0])
    assert result.verdict.startswith("insufficient trials")
    assert math.isnan(result.ci_low) and result.trials_needed is None
    assert result.percent_difference == pytest.approx(-50.0)
