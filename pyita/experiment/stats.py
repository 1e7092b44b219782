"""Statistics for paired trials: error summaries, bootstrap intervals, tests, verdicts and power.

Conditions are compared with the baseline *within* a trial (same subset, same test parents, same initial
weights), so the unit of replication is the trial and the paired difference is what is tested.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


def summarize(errors) -> dict:
    """MAE, RMSE, median, IQR and range of absolute errors (any unit)."""
    x = np.abs(np.asarray(errors, dtype=float).ravel())
    if x.size == 0:
        return {k: float("nan") for k in ("mae", "rmse", "median", "q1", "q3", "iqr", "min", "max", "n")}
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return {"mae": float(x.mean()), "rmse": float(np.sqrt(np.mean(x * x))), "median": float(median),
            "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "min": float(x.min()),
            "max": float(x.max()), "n": int(x.size)}


def bootstrap_mean_ci(values, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0):
    """Percentile bootstrap interval of the mean (scipy); degenerate inputs give (mean, mean)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2 or np.allclose(x, x[0]):
        m = float(x.mean()) if x.size else float("nan")
        return m, m
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p over paired differences (1.0 when all are zero)."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p a signed-rank test can reach with n pairs: 2 / 2**n."""
    return min(1.0, 2.0 / 2**n)


def mannwhitney_p(a, b) -> float:
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def trials_needed(differences, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Paired trials needed to detect the observed mean difference (normal approximation, two-sided).

    None when the observed effect is zero or there is no spread to estimate it from.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return None
    mean, sd = abs(d.mean()), d.std(ddof=1)
    if mean == 0:
        return None
    if sd == 0:
        return 2
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return max(2, math.ceil((z * sd / mean) ** 2))


@dataclass
class Comparison:
    """A condition against the baseline for one metric (lower is better)."""

    condition: str
    metric: str
    baseline_mean: float
    condition_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    wilcoxon_p_trials: float
    min_possible_p: float
    wilcoxon_p_structures: float
    mannwhitney_p_pooled: float
    n_trials: int
    trials_needed: int | None
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def compare(condition: str, metric: str, baseline_per_trial, condition_per_trial, baseline_pooled=(),
            condition_pooled=(), paired_pooled: bool = True, alpha: float = 0.05, seed: int = 0) -> Comparison:
    """Condition − baseline per trial: bootstrap CI, Wilcoxon over trials, tests on pooled errors, verdict.

    The verdict needs the interval to exclude zero AND a significant paired test (over trials when they
    can reach significance, otherwise over the paired per-structure errors), so neither trial-to-trial
    scatter nor a handful of trials can produce a false "better".
    """
    base = np.asarray(baseline_per_trial, float)
    cond = np.asarray(condition_per_trial, float)
    diff = cond - base
    low, high = bootstrap_mean_ci(diff, seed=seed)
    p_trials = wilcoxon_p(diff)
    bp, cp = np.asarray(baseline_pooled, float).ravel(), np.asarray(condition_pooled, float).ravel()
    p_struct = wilcoxon_p(cp - bp) if paired_pooled and bp.size and bp.size == cp.size else float("nan")
    p_pooled = mannwhitney_p(bp, cp)
    n = diff.size
    p_used = p_trials if min_wilcoxon_p(n) < alpha else p_struct
    if n >= 2 and high < 0 and p_used < alpha:
        verdict = "better"
    elif n >= 2 and low > 0 and p_used < alpha:
        verdict = "worse"
    else:
        verdict = f"no detectable difference at {n} trials"
    return Comparison(condition, metric, float(base.mean()), float(cond.mean()), float(diff.mean()), low, high,
                      p_trials, min_wilcoxon_p(n), p_struct, p_pooled, int(n), trials_needed(diff), verdict)
