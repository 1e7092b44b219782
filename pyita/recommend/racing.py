"""Racing training recipes: which recipes a round of paired trials eliminates, with a provable error rate.

Round k trains every surviving recipe on m new paired trials; its decisions use its own trials only (training
grows longer from round to round, so rounds are not pooled). Per pair of recipes the statistic is the paired t
over per-trial differences of ``log(value)`` (errors: relative differences) or of the raw values (fractions),
oriented so that lower is better — :func:`pyita.experiment.stats.decide`, the project's verdict rule.

Claims and their error. A round makes two kinds of claim: "A is better than B" (B is eliminated) and "A and B
differ by less than the margin" (|log ratio| < log(1 + margin) for errors; all survivors so: "indistinguishable").
The whole race makes a false claim of either kind with probability ≤ alpha, whatever the true means:

* Across rounds, Šidák: round k of R planned spends alpha_k = 1 − (1 − alpha)^(1/R) (a little more than alpha/R).
  Its trials are new, so given the past it errs with probability ≤ alpha_k, and P(no error) ≥ (1 − alpha_k)^R.
  Equal shares: in simulated races with effects constant over rounds, weighting later rounds 1:2:3 lost power
  (up to 0.09), weighting earlier ones 3:2:1 gained or lost ≤ 0.02 and ended sooner
  (``python tests/test_recommend_calibration.py`` prints the comparison); neither is clearly better.
* Within a round of n recipes (M pairs), the partitioning principle (Finner & Strassburger 2002): the true means
  lie in one cell — which pairs are tied (w), the others' signs and whether |δ| ≥ margin. Test that cell by
  Bonferroni over its units, each at alpha_k/(M + w): a tied pair gives two one-sided units (δ ≥ 0, δ ≤ 0), an
  untied one a single unit (δ ≥ 0 when 0 < δ < margin, δ ≥ margin beyond; mirrored). Every false claim below
  rejects a unit of the true cell at that level, so a round errs with probability ≤ alpha_k.
* The claims: each pair's one-sided p (half the paired-t p of ``decide``) in a step-down — step s compares the
  (s+1)-th smallest with alpha_k/(2M − a_s), a_s the fewest untied pairs possible given at least s (Shaffer's
  bound from the ways ties group recipes: a_0 = 0, Bonferroni over 2M one-sided tests; for s ≥ 1 fewer than
  Holm's 2M − s). A false claim at step s follows s true ones, so w ≤ M − a_s. "Within margin" is read off each
  unclaimed pair's interval at the level where the step-down stopped (it includes 0 there): a false one needs one
  more untied pair, so the same bound holds. Equivalence costs no share of alpha.

Claims are about the round's training length (round k's truth), and rest on the paired t being valid for the
per-trial differences (as for ``decide``: exact for normal ones, conservative for heavier symmetric tails). A
recipe eliminated is worse than some recipe of the round, not necessarily the best: each such claim is covered,
and it removes more. The best mean is never eliminated (its mean difference to any recipe is ≤ 0). One race
judges one metric; racing on two at once needs alpha split between them.

Diverged training (a non-finite value) is a fact, not an inference: a recipe that diverged in more trials of
the round than the steadiest recipe is eliminated for it; trials in which a remaining recipe diverged are left
out of the round's comparisons, so a non-finite value never enters a statistic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from pyita.errors import PyitaError, SettingError, whole_number
from pyita.experiment.stats import decide
from pyita.recommend.results import Comparison, Elimination, RoundResult

#: Family-wise error of the whole race: any false "better"/"worse" or "within margin" claim in any round.
ALPHA = 0.05
#: Indifference margin per transform: relative (5 %) for log-compared errors, absolute for raw fractions.
MARGIN = {"log": 0.05, "raw": 0.1}
DIRECTIONS = ("lower", "higher")
#: Round status codes of :func:`round_decisions` and their names in a :class:`RoundResult`.
CONTINUE, BEST, INDISTINGUISHABLE = 0, 1, 2
STATUS = {CONTINUE: "continue", BEST: "best", INDISTINGUISHABLE: "indistinguishable"}


def round_alpha(max_rounds: int, alpha: float = ALPHA) -> float:
    """Each round's share of the race's level: 1 − (1 − alpha)^(1/R) (Šidák over independent rounds)."""
    return -math.expm1(math.log1p(-alpha) / max_rounds)


@functools.cache
def untied_counts(n: int) -> tuple[int, ...]:
    """The possible numbers of pairs with unequal true means among n recipes: M − Σ C(size, 2) over every
    grouping of the recipes into clusters of equal means (integer partitions of n)."""
    pairs, found = n * (n - 1) // 2, set()

    def split(remaining: int, largest: int, tied: int) -> None:
        if remaining == 0:
            found.add(pairs - tied)
        for size in range(min(remaining, largest), 0, -1):
            split(remaining - size, size, tied + size * (size - 1) // 2)

    split(n, n, 0)
    return tuple(sorted(found))


@functools.cache
def step_divisors(n: int) -> tuple[int, ...]:
    """2M − a_s for steps s = 0 … M: step s of the step-down tests one-sided p against alpha_round / this."""
    pairs, counts = n * (n - 1) // 2, untied_counts(n)
    return tuple(2 * pairs - min(c for c in counts if c >= s) for s in range(pairs + 1))


def threshold_table(recipes: int, alpha_round: float) -> np.ndarray:
    """One-sided p thresholds, shape (recipes + 1, pairs + 1): row n holds steps 0 … M(n) for n recipes alive
    (0 beyond, where nothing is left to test)."""
    pairs = recipes * (recipes - 1) // 2
    table = np.zeros((recipes + 1, pairs + 1))
    for n in range(2, recipes + 1):
        divisors = step_divisors(n)
        table[n, :len(divisors)] = alpha_round / np.array(divisors, dtype=float)
    return table


@dataclass
class RoundArrays:
    """What :func:`round_decisions` finds, for a batch of B races of K recipes (P = K(K − 1)/2 pairs i < j)."""

    mean: np.ndarray        # (B, P) mean of y_i − y_j (positive: i worse)
    low: np.ndarray         # (B, P) interval at ``level``
    high: np.ndarray
    level: np.ndarray       # (B, P) one-sided level of the interval: the step's threshold, or where it stopped
    p: np.ndarray           # (B, P) one-sided p in the observed direction
    claimed: np.ndarray     # (B, P) bool: "the worse of i, j is worse" claimed
    within: np.ndarray      # (B, P) bool: unclaimed and the interval inside ± margin
    eliminated: np.ndarray  # (B, K) bool
    survivors: np.ndarray   # (B, K) bool
    status: np.ndarray      # (B,) CONTINUE, BEST or INDISTINGUISHABLE


def round_decisions(y, alive, alpha_round: float, margin: float, thresholds: np.ndarray | None = None
                    ) -> RoundArrays:
    """The round's claims for B races at once: ``y`` (B, K, m) finite transformed values oriented so that lower
    is better, ``alive`` (B, K) the recipes in the round, ``margin`` on the scale of y. ``thresholds`` replaces
    the step-down table (only to simulate other rules)."""
    y = np.asarray(y, dtype=float)
    alive = np.asarray(alive, dtype=bool)
    races, recipes, trials = y.shape
    i, j = np.triu_indices(recipes, 1)
    pairs = len(i)
    decision = decide(y[:, i] - y[:, j])
    se = decision.sd / math.sqrt(trials)
    p = decision.p / 2
    both = alive[:, i] & alive[:, j]
    table = threshold_table(recipes, alpha_round) if thresholds is None else thresholds
    step = table[alive.sum(1)]                                                # (B, P + 1)
    masked = np.where(both, p, np.inf)
    order = np.argsort(masked, axis=1, kind="stable")
    passed = np.cumprod(np.take_along_axis(masked, order, 1) <= step[:, :pairs], axis=1).astype(bool)
    claims = passed.sum(1)
    stop = step[np.arange(races), claims]
    claimed, level = np.zeros_like(passed), np.zeros(passed.shape)
    np.put_along_axis(claimed, order, passed, 1)
    np.put_along_axis(level, order, np.where(passed, step[:, :pairs], stop[:, None]), 1)
    with np.errstate(invalid="ignore"):
        half = np.where(both, sps.t.ppf(1 - np.where(both, level, 0.5), trials - 1) * se, 0.0)
    low, high = decision.mean - half, decision.mean + half
    worse = np.where(decision.mean > 0, i, j)
    eliminated = (claimed[..., None] & (worse[..., None] == np.arange(recipes))).any(1)
    survivors = alive & ~eliminated
    within = both & ~claimed & (high < margin) & (low > -margin)
    undecided = survivors[:, i] & survivors[:, j] & ~within
    status = np.where(survivors.sum(1) == 1, BEST, np.where(undecided.any(1), CONTINUE, INDISTINGUISHABLE))
    return RoundArrays(decision.mean, low, high, level, p, claimed, within, eliminated, survivors, status)


def _check_settings(round_index, max_rounds, direction, transform, margin, alpha) -> float:
    whole_number(max_rounds, "max_rounds", 1)
    whole_number(round_index, "round_index", 1)
    if round_index > max_rounds:
        raise SettingError(f"round_index {round_index} is beyond max_rounds {max_rounds}: the race's error "
                           "budget was spent over the rounds planned")
    if direction not in DIRECTIONS:
        raise SettingError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    if transform not in MARGIN:
        raise SettingError(f"transform must be one of {', '.join(MARGIN)}, got {transform!r}")
    if not (isinstance(alpha, int | float) and 0 < alpha < 1):
        raise SettingError(f"alpha must lie between 0 and 1, got {alpha!r}")
    margin = MARGIN[transform] if margin is None else margin
    if not (isinstance(margin, int | float) and math.isfinite(margin) and margin > 0):
        raise SettingError(f"margin must be a positive number, got {margin!r}")
    return float(margin)


def _matrix(values: Mapping[str, object], transform: str) -> tuple[list[str], np.ndarray]:
    names = list(values)
    if len(names) < 2 or not all(isinstance(n, str) and n for n in names):
        raise PyitaError(f"a round needs at least 2 recipes named by non-empty strings, got {names!r}")
    rows = []
    for name in names:
        try:
            row = np.asarray(values[name], dtype=float)
        except (TypeError, ValueError):
            raise PyitaError(f"recipe {name!r}: per-trial values are not numbers") from None
        if row.ndim != 1 or row.size < 2:
            raise PyitaError(f"recipe {name!r}: a round needs a 1-D array of at least 2 per-trial values, "
                             f"got shape {row.shape}")
        if rows and row.size != rows[0].size:
            raise PyitaError(f"recipe {name!r}: {row.size} trial values, {names[0]!r} has {rows[0].size}; "
                             "every recipe must be trained on the same trials")
        bad = np.flatnonzero(np.isfinite(row) & (row <= 0)) if transform == "log" else []
        if len(bad):
            raise PyitaError(f"recipe {name!r}: value {row[bad[0]]!r} in trial {bad[0] + 1} is not positive; "
                             "the log transform compares positive errors (use transform='raw')")
        rows.append(row)
    return names, np.array(rows)


def _divergence(names: list[str], x: np.ndarray, round_index: int):
    """Eliminations for diverged training, the recipes left (bool), the trials used (bool) and notes."""
    bad = ~np.isfinite(x)
    counts = bad.sum(1)
    keep = counts == counts.min()
    steadiest = names[int(np.argmax(keep))]
    gone = [Elimination(round_index, names[r], f"diverged in trial{'s' if counts[r] > 1 else ''} "
                        f"{', '.join(str(t + 1) for t in np.flatnonzero(bad[r]))} of {x.shape[1]}, more often "
                        f"than {steadiest} ({counts.min()})", None, None) for r in np.flatnonzero(~keep)]
    used = ~bad[keep].any(0)
    notes = [f"trial {t + 1} left out: a remaining recipe diverged in it" for t in np.flatnonzero(~used)]
    return gone, keep, used, notes


def race_round(values: Mapping[str, object], round_index: int, max_rounds: int, *, direction: str = "lower",
               transform: str = "log", margin: float | None = None, alpha: float = ALPHA,
               metric: str = "value") -> RoundResult:
    """Decide one round: ``values`` maps each recipe still in the race to its per-trial values (the same
    trials, in the same order, for every recipe); ``direction`` says which way is better, ``transform`` whether
    differences are relative ("log", for errors) or absolute ("raw", for fractions); ``margin`` is the
    indifference margin (a fraction for "log": 0.05 = 5 %). Round ``round_index`` of at most ``max_rounds``."""
    margin = _check_settings(round_index, max_rounds, direction, transform, margin, alpha)
    names, x = _matrix(values, transform)
    level = round_alpha(max_rounds, alpha)
    gone, keep, used, notes = _divergence(names, x, round_index)
    left = [n for n, k in zip(names, keep) if k]
    z = np.log(x[keep][:, used]) if transform == "log" else x[keep][:, used]
    sign = 1.0 if direction == "lower" else -1.0
    common = dict(round_index=round_index, max_rounds=max_rounds, alpha=level, race_alpha=alpha, metric=metric,
                  direction=direction, transform=transform, margin=margin, trials=x.shape[1],
                  trials_used=tuple(int(t) + 1 for t in np.flatnonzero(used)))
    means = tuple(float(v) for v in (np.exp(z.mean(1)) if transform == "log" else z.mean(1))) if used.any() else ()
    best = left[int(np.argmin(sign * np.array(means)))] if means else None
    if len(left) < 2 or used.sum() < 2:
        if len(left) >= 2:
            notes.append(f"{int(used.sum())} trial{'s' if used.sum() != 1 else ''} without divergence: "
                         "no comparison this round")
        return RoundResult(**common, status=STATUS[BEST if len(left) == 1 else CONTINUE], best=best,
                           recipes=tuple(left), means=means, survivors=tuple(left), eliminated=tuple(gone),
                           comparisons=(), notes=tuple(notes))
    found = round_decisions((sign * z)[None], np.ones((1, len(left)), bool), level,
                            math.log1p(margin) if transform == "log" else margin)
    comparisons, strongest = [], {}
    for k, (a, b) in enumerate(zip(*np.triu_indices(len(left), 1))):
        mean, low, high = (float(v[0, k]) for v in (found.mean, found.low, found.high))
        better, worse = (a, b) if mean <= 0 else (b, a)
        if mean <= 0:                                  # now y_worse − y_better ≥ 0 and its interval
            mean, low, high = -mean, -high, -low
        estimate, (low, high) = sign * mean, sorted((sign * low, sign * high))   # the metric's own direction
        if transform == "log":
            estimate, low, high = (100 * math.expm1(v) for v in (estimate, low, high))
        verdict = "worse" if found.claimed[0, k] else "within margin" if found.within[0, k] else "undecided"
        comparison = Comparison(left[better], left[worse], estimate, low, high, 1 - 2 * float(found.level[0, k]),
                                float(found.p[0, k]), verdict)
        comparisons.append(comparison)
        if verdict == "worse" and (comparison.worse not in strongest or comparison.p < strongest[comparison.worse].p):
            strongest[comparison.worse] = comparison
    for name in left:
        if name in strongest:
            gone.append(Elimination(round_index, name, strongest[name].text(metric, transform),
                                    strongest[name].better, strongest[name]))
    survivors = tuple(n for n, s in zip(left, found.survivors[0]) if s)
    return RoundResult(**common, status=STATUS[int(found.status[0])], best=best, recipes=tuple(left), means=means,
                       survivors=survivors, eliminated=tuple(gone), comparisons=tuple(comparisons),
                       notes=tuple(notes))
