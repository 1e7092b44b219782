"""Statistics for paired trials: error summaries, the verdict rule, descriptive tests and power.

Conditions are compared with the baseline *within* a trial (same subset, same test parents, same initial
weights). The unit of replication is the trial: the structures of one trial share one trained model, so
they say nothing about what varies between training runs (initial weights, subset, split). A verdict
therefore rests on the per-trial differences of the mean errors alone:

    d_t = MAE_condition(trial t) − MAE_baseline(trial t),      t = 1 … n

and the paired t interval over them, mean(d) ± t_{0.975, n−1} · sd(d) / √n. Under no effect it excludes 0
in 5 % of experiments whatever the trial-to-trial scatter (exactly so for normal d_t; the per-trial means
of ~40 structures are close to normal, and heavier-tailed symmetric d_t make it conservative). For this
balanced design it is what a linear mixed model of the per-structure differences with a random intercept
per trial gives, with the exact small-sample degrees of freedom; a mixed model fitted by statsmodels would
use a normal interval (too narrow with 3–5 trials) and, when it estimates the trial variance as zero,
collapse to the per-structure test. A bootstrap over 3–5 trials would be anti-conservative: every resample
of 4 same-sign values has that sign, which happens under no effect with probability 1/8.

``decide`` is the rule, vectorised: the report calls it for one comparison and the calibration tests call
it for thousands of simulated experiments at once. Wilcoxon and Mann–Whitney p values are reported as
descriptive columns and never decide a verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from pyita.metrics import summarize as error_summary

#: Verdict codes of :func:`decide`.
BETTER, NO_DIFFERENCE, WORSE, INSUFFICIENT = -1, 0, 1, 2
#: Power at which "trials needed" is computed.
POWER = 0.8


#: The columns of the report's error tables, in their order.
TABLE_STATISTICS = ("mae", "rmse", "median", "q1", "q3", "iqr", "min", "max", "n")


def summarize(errors) -> dict:
    """The report's columns of ``pyita.metrics.summarize`` (the one error summary)."""
    summary = error_summary(errors)
    return {k: summary[k] for k in TABLE_STATISTICS}


@dataclass
class Decision:
    """What :func:`decide` returns; every field has the shape of the differences without their last axis."""

    mean: np.ndarray
    sd: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p: np.ndarray
    code: np.ndarray


def decide(differences, alpha: float = 0.05) -> Decision:
    """The verdict rule: paired t interval over per-trial differences (last axis = trials, df = n − 1).

    ``code`` is BETTER when the whole (1 − alpha) interval lies below 0, WORSE when it lies above 0,
    NO_DIFFERENCE otherwise, and INSUFFICIENT with fewer than 2 trials (no estimate of the scatter between
    trials, so no interval). ``p`` is the two-sided paired t p value (p < alpha exactly when the interval
    excludes 0). Differences that are all equal give a zero-width interval at their value.
    """
    d = np.asarray(differences, dtype=float)
    n = d.shape[-1]
    mean = d.mean(axis=-1) if n else np.full(d.shape[:-1], np.nan)
    if n < 2:
        nan = np.full(mean.shape, np.nan)
        return Decision(mean, nan, nan.copy(), nan.copy(), nan.copy(), np.full(mean.shape, INSUFFICIENT))
    sd = d.std(axis=-1, ddof=1)
    se = sd / math.sqrt(n)
    half = stats.t.ppf(1 - alpha / 2, n - 1) * se
    low, high = mean - half, mean + half
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1.0), np.where(mean == 0, 0.0, np.inf))
    p = 2 * stats.t.sf(t, n - 1)
    code = np.where(high < 0, BETTER, np.where(low > 0, WORSE, NO_DIFFERENCE))
    return Decision(mean, sd, low, high, p, code)


def t_power(effect_size: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t test with n trials at standardised effect mean/sd (noncentral t)."""
    if n < 2:
        return 0.0
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect_size) * math.sqrt(n)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def trials_needed(differences, alpha: float = 0.05, power: float = POWER) -> int | None:
    """Paired trials needed for the paired t test to detect the observed mean difference with the observed
    trial-to-trial SD at the given power (two-sided, exact noncentral t).

    None when there is nothing to go on: fewer than 2 trials, or an observed effect of exactly zero.
    """
    d = np.asarray(differences, dtype=float)
    if d.size < 2:
        return None
    mean, sd = abs(float(d.mean())), float(d.std(ddof=1))
    if mean == 0:
        return None
    if sd == 0:
        return 2
    effect = mean / sd
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil((z / effect) ** 2))   # the normal approximation: a slight underestimate
    if n > 100_000:
        return n
    while t_power(effect, n, alpha) < power:
        n += 1
    while n > 2 and t_power(effect, n - 1, alpha) >= power:
        n -= 1
    return n


def wilcoxon_p(differences) -> float:
    """Two-sided Wilcoxon signed-rank p over paired differences (1.0 when all are zero). Descriptive only."""
    d = np.asarray(differences, dtype=float)
    if d.size == 0 or np.all(d == 0):
        return 1.0
    return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def min_wilcoxon_p(n: int) -> float:
    """The smallest two-sided p a signed-rank test can reach with n pairs: 2 / 2**n."""
    return min(1.0, 2.0 / 2**n)


def mannwhitney_p(a, b) -> float:
    """Two-sided Mann–Whitney U p of two unpaired samples. Descriptive only."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def verdict_text(code: int, n: int, needed: int | None) -> str:
    """The verdict column: "better", "worse", "no detectable difference at n trials[; insufficient
    trials: N needed for the observed effect at 80 % power]" or "insufficient trials: …"."""
    if code == BETTER:
        return "better"
    if code == WORSE:
        return "worse"
    if code == INSUFFICIENT:
        return (f"insufficient trials: {n} trial{'s' if n != 1 else ''} cannot separate an effect from "
                "trial-to-trial scatter (at least 2 needed, 5 or more advised)")
    text = f"no detectable difference at {n} trials"
    if needed is not None and needed > n:
        text += f"; insufficient trials: {needed} needed for the observed effect at {POWER * 100:.0f} % power"
    return text


@dataclass
class Comparison:
    """A condition against the baseline for one metric (lower is better). Differences are condition −
    baseline per trial; ``percent_*`` are the same divided by the mean baseline MAE (× 100)."""

    condition: str
    metric: str
    baseline_mean: float
    condition_mean: float
    mean_difference: float
    ci_low: float
    ci_high: float
    percent_difference: float
    percent_ci_low: float
    percent_ci_high: float
    sd_difference: float
    t_p_trials: float
    wilcoxon_p_trials: float
    min_possible_p: float
    wilcoxon_p_structures: float
    mannwhitney_p_pooled: float
    n_trials: int
    trials_needed: int | None
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def no_verdict(condition: str, metric: str, n_trials: int, reason: str) -> Comparison:
    """A comparison that cannot be made (e.g. predictions that are not finite): no statistics, and a verdict
    that says why."""
    nan = float("nan")
    return Comparison(condition, metric, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan,
                      min_wilcoxon_p(n_trials), nan, nan, n_trials, None, f"no verdict: {reason}")


def _percent(value: float, reference: float) -> float:
    return 100.0 * value / reference if reference > 0 and math.isfinite(value) else float("nan")


def compare(condition: str, metric: str, baseline_per_trial, condition_per_trial, baseline_pooled=(),
            condition_pooled=(), paired_pooled: bool = True, alpha: float = 0.05,
            higher_is_better: bool = False) -> Comparison:
    """Condition − baseline per trial: the paired t interval and verdict of :func:`decide`, the same as a
    percentage of the mean baseline, and descriptive tests (Wilcoxon over trials and over the paired
    per-structure errors pooled across trials, Mann–Whitney over the pooled errors unpaired).

    The percentage interval is the t interval divided by the mean baseline MAE (taken as fixed), so it
    excludes 0 exactly when the verdict is "better" or "worse". ``higher_is_better`` (MD stability) turns
    the verdict round: an interval above 0 is then "better".
    """
    base = np.asarray(baseline_per_trial, float)
    cond = np.asarray(condition_per_trial, float)
    diff = cond - base
    n = int(diff.size)
    decision = decide(diff, alpha)
    needed = trials_needed(diff, alpha)
    bp, cp = np.asarray(baseline_pooled, float).ravel(), np.asarray(condition_pooled, float).ravel()
    p_struct = wilcoxon_p(cp - bp) if paired_pooled and bp.size and bp.size == cp.size else float("nan")
    reference = float(base.mean()) if n else float("nan")
    mean, low, high = float(decision.mean), float(decision.ci_low), float(decision.ci_high)
    code = int(decision.code)
    if higher_is_better and code in (BETTER, WORSE):
        code = BETTER if code == WORSE else WORSE
    return Comparison(
        condition, metric, reference, float(cond.mean()) if n else float("nan"), mean, low, high,
        _percent(mean, reference), _percent(low, reference), _percent(high, reference), float(decision.sd),
        float(decision.p), wilcoxon_p(diff) if n else float("nan"), min_wilcoxon_p(n), p_struct,
        mannwhitney_p(bp, cp), n, needed, verdict_text(code, n, needed))
