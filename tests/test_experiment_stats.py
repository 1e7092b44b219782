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


def test_bootstrap_ci_covers_mean_and_is_reproducible():
    d = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    low, high = stats.bootstrap_mean_ci(d, seed=3)
    assert low < 3.5 < high
    assert (low, high) == stats.bootstrap_mean_ci(d, seed=3)
    assert 1.0 <= low and high <= 6.0


def test_trials_needed_normal_approximation():
    d = np.array([1.0, 3.0, 2.0, 2.0])   # mean 2, sd sqrt(2/3)
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.8)
    assert stats.trials_needed(d) == max(2, math.ceil((z * math.sqrt(2 / 3) / 2) ** 2))
    assert stats.trials_needed([0.0, 0.0]) is None


def test_verdicts():
    base = [10.0, 11.0, 12.0, 10.5, 11.5, 12.5, 10.2, 11.2]
    better = stats.compare("x", "E", base, [b - 1.0 + 0.01 * k for k, b in enumerate(base)])
    assert better.verdict == "better" and better.ci_high < 0
    worse = stats.compare("x", "E", base, [b + 2.0 for b in base])
    assert worse.verdict == "worse"
    noise = stats.compare("x", "E", base, [b + s for b, s in zip(base, [0.3, -0.2, 0.1, -0.4, 0.2, -0.1, 0.0, 0.05])])
    assert noise.verdict.startswith("no detectable difference")


def test_five_trials_fall_back_to_paired_structures():
    # 5 trials can never reach p < 0.05 over trials; a consistent per-structure improvement still counts
    rng = np.random.default_rng(0)
    base_pooled = rng.uniform(5, 10, 200)
    cond_pooled = base_pooled - 1.0
    base = [10, 11, 12, 13, 14]
    result = stats.compare("x", "E", base, [b - 1 for b in base], base_pooled, cond_pooled)
    assert result.min_possible_p == pytest.approx(0.0625)
    assert result.wilcoxon_p_structures < 1e-10
    assert result.verdict == "better"
