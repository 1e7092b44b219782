"""Calibration of the verdict rule: simulated experiments of known structure, thousands at a time.

Each simulated experiment has n paired trials of a baseline and a condition, drawn by the noise model of
tests/simulated_trials.py (shared trial effects, Student-t training-run effects, 40 log-normal test structures
per trial). The per-trial MAEs go through ``stats.decide`` — the very function whose verdict the report prints
— for all experiments at once.

With no true effect the false-verdict rate ("better" or "worse") must stay within 5 % plus Monte-Carlo
error at 3, 4, 5 and 10 trials. The old rule (percentile bootstrap over trials + Wilcoxon over the pooled
per-structure errors) is simulated too, to show that the test can fail: it gives ≈ 12–13 % at 4 trials.
With a true effect (errors 5 % or 30 % lower) the power is reported (``python tests/test_calibration.py``)
and must grow with the number of trials.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from pyita.experiment import stats
from simulated_trials import SCENARIOS, simulate_errors

N_NULL = 10_000           # simulated experiments per trial count without an effect
N_POWER = 4_000           # with an effect
TRIAL_COUNTS = (3, 4, 5, 10)
ALPHA = 0.05
#: True effects for the power runs: the condition lowers every error by 5 % (forces-like) or 30 %
#: (energy-like).
EFFECTS = {"forces-like": math.log(0.95), "energy-like": math.log(0.70)}


def simulate(n_experiments: int, n_trials: int, effect: float = 0.0, seed: int = 0, **settings):
    """Per-trial MAEs of baseline and condition, shape (experiments, trials), and the per-structure
    absolute errors, shape (experiments, trials, structures), of both."""
    rng = np.random.default_rng([seed, n_trials, int(effect * 1e6) & 0xFFFF])
    errors = simulate_errors(rng, n_experiments, n_trials, (0.0, effect), **settings)
    return errors[0].mean(-1), errors[1].mean(-1), errors[0], errors[1]


def false_rate_bound(n: int, rate: float = ALPHA) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / n)


def new_rule_codes(base, cond):
    return stats.decide(cond - base, ALPHA).code


def old_rule_codes(base, cond, base_structures, cond_structures, resamples: int = 2000, seed: int = 1):
    """The rule before issue 12, vectorised: percentile bootstrap interval of the mean per-trial difference
    must exclude 0, and a paired Wilcoxon test must give p < 0.05 — over trials when they can reach it
    (≥ 6 trials), else over the per-structure errors pooled across trials."""
    d = cond - base
    n = d.shape[1]
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)])
    means = d @ counts.T / n                                                 # (experiments, resamples)
    low, high = np.percentile(means, [2.5, 97.5], axis=1)
    if stats.min_wilcoxon_p(n) < ALPHA:
        p = sps.wilcoxon(d, axis=1).pvalue
    else:
        pooled = (cond_structures - base_structures).reshape(len(d), -1)
        p = sps.wilcoxon(pooled, axis=1, method="approx").pvalue
    return np.where((high < 0) & (p < ALPHA), stats.BETTER,
                    np.where((low > 0) & (p < ALPHA), stats.WORSE, stats.NO_DIFFERENCE))


def rates(n_trials: int, effect: float, n_experiments: int, scenario: str = "forces-like") -> tuple[float, float]:
    """(share of "better", share of "worse") verdicts of the new rule."""
    base, cond, _, _ = simulate(n_experiments, n_trials, effect, **SCENARIOS[scenario])
    code = new_rule_codes(base, cond)
    return float(np.mean(code == stats.BETTER)), float(np.mean(code == stats.WORSE))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("n_trials", TRIAL_COUNTS)
def test_no_effect_gives_at_most_5_percent_false_verdicts(n_trials, scenario):
    better, worse = rates(n_trials, 0.0, N_NULL, scenario)
    assert better + worse <= false_rate_bound(N_NULL), (n_trials, better, worse)
    # and the rule is not so conservative that it never speaks (exact t: 5 %, less under heavy tails)
    assert better + worse >= 0.025
    assert abs(better - worse) <= 4 * math.sqrt(0.05 / N_NULL)   # symmetric: no bias towards "better"


def test_the_old_rule_fails_this_calibration():
    """The test can fail: the rule before issue 12 says "better"/"worse" without any effect in more than
    1 of 8 experiments at 4 trials (all 4 per-trial differences share a sign with probability 1/8, and the
    pooled per-structure test is then nearly always significant)."""
    base, cond, bs, cs = simulate(4000, 4, 0.0, **SCENARIOS["forces-like"])
    rate = float(np.mean(old_rule_codes(base, cond, bs, cs) != stats.NO_DIFFERENCE))
    assert rate > false_rate_bound(4000)
    assert rate > 0.10
    # while the new rule passes on the very same experiments
    assert np.mean(new_rule_codes(base, cond) != stats.NO_DIFFERENCE) <= false_rate_bound(4000)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_power_rises_with_trials(scenario):
    found = [rates(n, EFFECTS[scenario], N_POWER, scenario) for n in TRIAL_COUNTS]
    powers = [better for better, _ in found]
    assert all(a < b for a, b in zip(powers, powers[1:])), powers
    assert powers[-1] > 0.2
    assert all(worse < 0.01 for _, worse in found)   # a true improvement is (almost) never called "worse"


def test_decide_matches_scipy_paired_t_on_random_inputs():
    """The vectorised rule equals the textbook paired t test, experiment by experiment."""
    rng = np.random.default_rng(7)
    for n in (2, 3, 4, 5, 10):
        base = rng.uniform(0.2, 1.0, (300, n))
        cond = base + rng.normal(rng.normal(0, 0.05, (300, 1)), 0.05, (300, n))
        decision = stats.decide(cond - base)
        test = sps.ttest_rel(cond, base, axis=1)
        interval = test.confidence_interval(0.95)
        np.testing.assert_allclose(decision.p, test.pvalue, rtol=1e-9)
        np.testing.assert_allclose(decision.ci_low, interval.low, rtol=1e-9)
        np.testing.assert_allclose(decision.ci_high, interval.high, rtol=1e-9)
        significant = test.pvalue < 0.05
        assert np.array_equal(decision.code != stats.NO_DIFFERENCE, significant)
        assert np.array_equal(decision.code[significant] == stats.BETTER, test.statistic[significant] < 0)
        # and the report's compare() says the same for each experiment
        for k in range(0, 300, 37):
            verdict = stats.compare("c", "m", base[k], cond[k]).verdict
            expected = {stats.BETTER: "better", stats.WORSE: "worse"}.get(int(decision.code[k]))
            assert verdict == expected if expected else verdict.startswith("no detectable difference")


def power_table() -> list[tuple]:
    """(scenario, trials, false-verdict rate without effect: new rule, old rule; power of the new rule)."""
    rows = []
    for scenario, settings in SCENARIOS.items():
        for n in TRIAL_COUNTS:
            base, cond, bs, cs = simulate(N_NULL, n, 0.0, **settings)
            new = float(np.mean(new_rule_codes(base, cond) != stats.NO_DIFFERENCE))
            old = float(np.mean(old_rule_codes(base, cond, bs, cs) != stats.NO_DIFFERENCE))
            rows.append((scenario, n, new, old, rates(n, EFFECTS[scenario], N_POWER, scenario)[0]))
    return rows


if __name__ == "__main__":
    print(f"{N_NULL} experiments without effect, {N_POWER} with a lower error (forces-like −5 %, energy-like "
          "−30 %), per row")
    print("scenario | trials | false verdicts, new rule | false verdicts, old rule | power, new rule")
    for scenario, n, new, old, power in power_table():
        print(f"{scenario} | {n} | {new:.4f} | {old:.4f} | {power:.3f}")
