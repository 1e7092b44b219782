"""The race's statistics (pyita.recommend), checked against hand calculations and scipy's paired t test."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from pyita.errors import PyitaError, SettingError
from pyita.recommend import (RoundResult, final_statement, race_round, round_alpha, round_decisions)
from pyita.recommend.racing import MARGIN, step_divisors, untied_counts

#: Three recipes, 4 trials (force MAE, eV/Å): A best; B clearly worse; C worse with a one-sided paired-t p of
#: 0.0119 against A — between Holm's second threshold alpha/5 = 0.010 and Shaffer's alpha/4 = 0.0125.
A = [0.40, 0.42, 0.38, 0.41]
B = [0.54, 0.57, 0.51, 0.55]
C = [0.42, 0.51, 0.47, 0.50]


def one_sided(worse, better) -> float:
    return sps.ttest_rel(np.log(worse), np.log(better), alternative="greater").pvalue


def interval(worse, better, threshold: float) -> tuple[float, float]:
    """The paired t interval of log(worse) − log(better) at one-sided level ``threshold``, in %."""
    ci = sps.ttest_rel(np.log(worse), np.log(better)).confidence_interval(1 - 2 * threshold)
    return 100 * math.expm1(ci.low), 100 * math.expm1(ci.high)


def test_shaffer_bounds_by_brute_force():
    """The fewest untied pairs, from every set partition of n recipes (not only integer partitions)."""
    def set_partitions(items):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for part in set_partitions(rest):
            for k in range(len(part)):
                yield part[:k] + [[first, *part[k]]] + part[k + 1:]
            yield [[first], *part]

    for n in range(2, 7):
        pairs = n * (n - 1) // 2
        untied = {sum(1 for a, b in itertools.combinations(range(n), 2)
                      if not any(a in g and b in g for g in part)) for part in set_partitions(list(range(n)))}
        assert untied_counts(n) == tuple(sorted(untied))
        assert step_divisors(n) == tuple(2 * pairs - min(u for u in untied if u >= s) for s in range(pairs + 1))
    assert step_divisors(3) == (6, 4, 4, 3)          # Holm over 6 one-sided tests: 6, 5, 4, 3
    assert step_divisors(4) == (12, 9, 9, 9, 8, 7, 6)


def test_sidak_over_rounds():
    for rounds in (1, 2, 3, 7):
        assert (1 - round_alpha(rounds)) ** rounds == pytest.approx(0.95, abs=1e-14)
    assert round_alpha(1) == pytest.approx(0.05) and round_alpha(3) > 0.05 / 3


def test_three_recipes_by_hand():
    alpha = 0.05                       # one planned round: the whole level
    p_ab, p_ac, p_cb = one_sided(B, A), one_sided(C, A), one_sided(B, C)
    assert p_ab < alpha / 6            # step 0: Bonferroni over 6 one-sided tests
    assert alpha / 5 < p_ac <= alpha / 4   # step 1: Shaffer (4), not Holm (5)
    assert p_cb > alpha / 4            # step 2: stops; B vs C undecided
    result = race_round({"A": A, "B": B, "C": C}, 1, 1, metric="force MAE")
    assert (result.status, result.best, result.survivors) == ("best", "A", ("A",))
    assert result.alpha == pytest.approx(alpha) and result.trials_used == (1, 2, 3, 4)
    assert [(e.recipe, e.by) for e in result.eliminated] == [("B", "A"), ("C", "A")]
    by_pair = {(c.better, c.worse): c for c in result.comparisons}
    assert set(by_pair) == {("A", "B"), ("A", "C"), ("C", "B")}
    for (better, worse), values, p, threshold, verdict in [
            (("A", "B"), (B, A), p_ab, alpha / 6, "worse"), (("A", "C"), (C, A), p_ac, alpha / 4, "worse"),
            (("C", "B"), (B, C), p_cb, alpha / 4, "undecided")]:
        c = by_pair[better, worse]
        assert (c.verdict, c.p) == (verdict, pytest.approx(p, rel=1e-9))
        assert c.confidence == pytest.approx(1 - 2 * threshold)
        assert (c.ci_low, c.ci_high) == pytest.approx(interval(*values, threshold), rel=1e-9)
        ratio = np.exp(np.mean(np.log(values[0]) - np.log(values[1])))
        assert c.difference == pytest.approx(100 * (ratio - 1), rel=1e-9)
    assert result.means == pytest.approx([np.exp(np.mean(np.log(v))) for v in (A, B, C)])
    assert result.eliminated[1].reason.startswith("force MAE +")


def test_the_step_down_claims_more_than_bonferroni():
    """The same data with 3 planned rounds: at alpha_k = 0.01695 C's p exceeds alpha_k/4 and only B goes."""
    result = race_round({"A": A, "B": B, "C": C}, 2, 3)
    assert one_sided(C, A) > round_alpha(3) / 4
    assert [e.recipe for e in result.eliminated] == ["B"] and result.status == "continue"
    assert result.survivors == ("A", "C")


def test_equal_recipes_are_indistinguishable_within_the_margin():
    a = [0.300, 0.310, 0.305, 0.295, 0.302]
    b = [0.301, 0.309, 0.306, 0.296, 0.301]
    result = race_round({"a": a, "b": b}, 1, 2)
    assert result.status == "indistinguishable" and set(result.survivors) == {"a", "b"}
    (c,) = result.comparisons
    threshold = round_alpha(2) / 2                   # two one-sided tests for the pair, no claim made
    worse, better = (b, a) if c.worse == "b" else (a, b)
    assert (c.ci_low, c.ci_high) == pytest.approx(interval(worse, better, threshold), rel=1e-9)
    assert c.verdict == "within margin" and -5 < c.ci_low < c.ci_high < 5
    # a margin of 0.1 % is too narrow for these intervals
    assert race_round({"a": a, "b": b}, 1, 2, margin=0.001).status == "continue"


def test_identical_and_constant_differences_give_finite_results():
    same = race_round({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}, 1, 1)
    assert same.status == "indistinguishable" and same.comparisons[0].ci_low == same.comparisons[0].ci_high == 0
    shifted = race_round({"a": [1.0, 2.0, 3.0], "b": [2.0, 4.0, 6.0]}, 1, 1)   # b always twice a
    assert shifted.survivors == ("a",) and shifted.comparisons[0].difference == pytest.approx(100)
    json.dumps(shifted.to_dict(), allow_nan=False)


def test_higher_is_better_on_raw_fractions():
    """MD stable fractions: higher is better, differences absolute (worse − better < 0)."""
    good, bad = [0.9, 0.8, 1.0, 0.9], [0.2, 0.1, 0.3, 0.3]
    result = race_round({"bad": bad, "good": good}, 1, 1, direction="higher", transform="raw")
    assert result.survivors == ("good",) and result.best == "good"
    (c,) = result.comparisons
    assert (c.better, c.worse, c.verdict) == ("good", "bad", "worse")
    assert c.difference == pytest.approx(np.mean(bad) - np.mean(good))
    ci = sps.ttest_rel(bad, good).confidence_interval(c.confidence)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert c.p == pytest.approx(sps.ttest_rel(good, bad, alternative="greater").pvalue, rel=1e-9)
    # the same race with the values negated and lower better makes the same decisions
    mirrored = race_round({"bad": np.negative(bad), "good": np.negative(good)}, 1, 1, transform="raw")
    assert mirrored.survivors == result.survivors and mirrored.comparisons[0].p == pytest.approx(c.p)
    assert MARGIN["raw"] == result.margin == 0.1


def test_diverged_recipe_is_eliminated_and_never_compared():
    values = {"A": A, "B": [0.5, math.nan, 0.5, 0.5], "C": C}
    result = race_round(values, 1, 1)
    (diverged, *_) = result.eliminated
    assert (diverged.recipe, diverged.by, diverged.comparison) == ("B", None, None)
    assert diverged.reason == "diverged in trial 2 of 4, more often than A (0)"
    assert result.recipes == ("A", "C") and result.trials_used == (1, 2, 3, 4)
    assert result.comparisons == race_round({"A": A, "C": C}, 1, 1).comparisons
    assert set(result.entrants) == {"A", "B", "C"}
    json.dumps(result.to_dict(), allow_nan=False)


def test_a_trial_where_every_recipe_diverged_is_left_out():
    values = {"A": [math.inf, *A], "B": [math.nan, *B], "C": [math.nan, *C]}
    result = race_round(values, 1, 1)
    assert result.trials_used == (2, 3, 4, 5) and not result.eliminated[2:]
    assert result.notes == ("trial 1 left out: a remaining recipe diverged in it",)
    clean = race_round({"A": A, "B": B, "C": C}, 1, 1)
    assert result.comparisons == clean.comparisons and result.survivors == clean.survivors


def test_divergence_everywhere_leaves_no_comparison():
    values = {"A": [math.nan, 0.4, 0.5], "B": [0.4, math.nan, 0.5]}
    result = race_round(values, 1, 1)
    assert result.status == "continue" and result.comparisons == () and result.trials_used == (3,)
    assert result.survivors == ("A", "B") and "no comparison this round" in result.notes[-1]
    lone = race_round({"A": [0.4, 0.5, 0.6], "B": [0.4, math.nan, 0.5]}, 1, 1)
    assert (lone.status, lone.survivors, lone.best) == ("best", ("A",), "A")
    json.dumps(result.to_dict(), allow_nan=False)


def test_json_round_trip():
    result = race_round({"A": A, "B": [0.5, math.nan, 0.5, 0.5], "C": C}, 1, 2, metric="force MAE (eV/Å)")
    text = json.dumps(result.to_dict(), allow_nan=False)
    again = RoundResult.from_dict(json.loads(text))
    assert again == result
    with pytest.raises(PyitaError, match="not a race round"):
        RoundResult.from_dict({"round_index": 1})


def test_final_statement_over_rounds():
    first = race_round({"A": A, "B": B, "C": C}, 1, 3, metric="force MAE")
    second = race_round({"A": A[::-1], "C": C[::-1]}, 2, 3, metric="force MAE")
    statement = final_statement([first, second])
    assert statement.status == "undecided" and statement.recommended is None
    assert statement.survivors == second.survivors == ("A", "C") and statement.leading == "A"
    assert [(e.round_index, e.recipe) for e in statement.settled] == [(1, "B")]
    assert statement.unsettled == second.comparisons
    assert statement.lines[0].startswith("Not settled after 2 rounds: A, C remain")
    assert statement.lines[1].startswith("Settled — round 1: B eliminated: force MAE +")
    assert statement.lines[-1] == ("All claims hold together with probability ≥ 95 % (each of 3 planned rounds "
                                   "at 1.7 %).")
    json.dumps(statement.to_dict(), allow_nan=False)
    done = final_statement([race_round({"A": A, "B": B, "C": C}, 1, 1)])
    assert (done.status, done.recommended) == ("best", "A") and done.unsettled == ()


def test_final_statement_refuses_a_broken_history():
    first = race_round({"A": A, "B": B, "C": C}, 1, 3)
    with pytest.raises(PyitaError, match="not the survivors of round 1"):
        final_statement([first, race_round({"A": A, "B": B}, 2, 3)])
    with pytest.raises(PyitaError, match="rounds must be 1, 2"):
        final_statement([race_round({"A": A, "C": C}, 2, 3)])
    with pytest.raises(PyitaError, match="other settings"):
        final_statement([first, race_round({"A": A, "C": C}, 2, 3, margin=0.2)])
    with pytest.raises(PyitaError, match="at least one round"):
        final_statement([])


@pytest.mark.parametrize("values, settings, message", [
    ({"A": A}, {}, "at least 2 recipes"),
    ({"A": A, "B": B[:3]}, {}, "same trials"),
    ({"A": A, "B": [0.5]}, {}, "at least 2 per-trial values"),
    ({"A": A, "B": [0.5, -0.1, 0.4, 0.4]}, {}, "not positive"),
    ({"A": A, "B": ["x", 1, 2, 3]}, {}, "not numbers"),
    ({"A": A, "B": B}, {"round_index": 4}, "beyond max_rounds"),
    ({"A": A, "B": B}, {"direction": "up"}, "direction must be"),
    ({"A": A, "B": B}, {"transform": "sqrt"}, "transform must be"),
    ({"A": A, "B": B}, {"margin": 0}, "margin must be"),
    ({"A": A, "B": B}, {"alpha": 1.5}, "alpha must"),
    ({"A": A, "B": B}, {"alpha": "0.05"}, "alpha must"),
    ({"A": A, "B": B}, {"max_rounds": 0}, "max_rounds must"),
])
def test_bad_input_is_refused_in_one_line(values, settings, message):
    arguments = {"round_index": 1, "max_rounds": 3, **settings}
    with pytest.raises((PyitaError, SettingError), match=message) as caught:
        race_round(values, **arguments)
    assert "\n" not in str(caught.value)


def test_race_round_agrees_with_the_calibrated_engine():
    """The function the orchestrator calls decides as the vectorised engine of the calibration tests."""
    rng = np.random.default_rng(3)
    y = rng.normal(0, 0.1, (200, 5, 4)) + rng.choice([0.0, 0.15, 0.4], (200, 5, 1))
    alive = rng.random((200, 5)) < 0.8
    alive[:, :2] = True
    found = round_decisions(y, alive, round_alpha(3), math.log1p(0.05))
    for k in range(200):
        names = [f"r{r}" for r in range(5) if alive[k, r]]
        result = race_round({n: np.exp(y[k, int(n[1:])]) for n in names}, 1, 3)
        assert set(result.survivors) == {f"r{r}" for r in range(5) if found.survivors[k, r]}
        assert result.status == {0: "continue", 1: "best", 2: "indistinguishable"}[int(found.status[k])]
