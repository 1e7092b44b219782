"""What a race says: one round's decisions (:class:`RoundResult`) and the final statement over all rounds.

Frozen dataclasses with ``to_dict`` (plain JSON types: the orchestrator stores each round as it ends) and
``RoundResult.from_dict`` (a resumed race rebuilds its history). Differences are "worse − better" in the
metric's own terms: % of the better recipe's value for log-compared metrics, the metric's units otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from pyita.errors import PyitaError
from pyita.experiment.analysis import signed_text

#: A round's status that ends the race.
FINAL = ("best", "indistinguishable")


def _level(confidence: float) -> str:
    return f"{100 * confidence:.4g} %"


@dataclass(frozen=True)
class Comparison:
    """One pair of recipes in a round: ``better`` has the better mean. ``verdict`` is "worse" (``worse`` is
    claimed worse: the interval at ``confidence`` excludes 0), "within margin" (the interval lies inside
    ± the margin) or "undecided". ``p``: one-sided paired-t p for "``worse`` is not worse"."""

    better: str
    worse: str
    difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p: float
    verdict: str

    def text(self, metric: str, transform: str) -> str:
        unit = " %" if transform == "log" else ""
        return (f"{metric} {signed_text(self.difference, unit)} vs {self.better} "
                f"({_level(self.confidence)} CI {signed_text(self.ci_low, unit)} … {signed_text(self.ci_high, unit)})")


@dataclass(frozen=True)
class Elimination:
    """A recipe out of the race in round ``round_index``: worse than ``by`` (with the ``comparison`` that shows
    it), or diverged (``by`` and ``comparison`` None)."""

    round_index: int
    recipe: str
    reason: str
    by: str | None
    comparison: Comparison | None


@dataclass(frozen=True)
class RoundResult:
    """One round's decisions. ``alpha`` is the round's share of the race's ``race_alpha``; ``recipes`` the
    recipes compared (the round's entrants less those that diverged) with their ``means`` over ``trials_used``
    (geometric for log-compared metrics); ``best`` the best mean (not a claim by itself); ``status`` "best" (one
    survivor: stop), "indistinguishable" (survivors pairwise within the margin: stop, take the cheapest) or
    "continue"."""

    round_index: int
    max_rounds: int
    alpha: float
    race_alpha: float
    metric: str
    direction: str
    transform: str
    margin: float
    trials: int
    trials_used: tuple[int, ...]
    status: str
    best: str | None
    recipes: tuple[str, ...]
    means: tuple[float, ...]
    survivors: tuple[str, ...]
    eliminated: tuple[Elimination, ...]
    comparisons: tuple[Comparison, ...]
    notes: tuple[str, ...]

    @property
    def entrants(self) -> tuple[str, ...]:
        return self.recipes + tuple(e.recipe for e in self.eliminated if e.comparison is None)

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RoundResult:
        """The inverse of :meth:`to_dict` (also after a JSON round trip)."""
        try:
            values = {f.name: data[f.name] for f in fields(cls)}
            values["eliminated"] = tuple(
                Elimination(**{**e, "comparison": Comparison(**e["comparison"]) if e["comparison"] else None})
                for e in values["eliminated"])
            values["comparisons"] = tuple(Comparison(**c) for c in values["comparisons"])
        except (KeyError, TypeError) as err:
            raise PyitaError(f"not a race round: {err}") from None
        for name in ("trials_used", "recipes", "means", "survivors", "notes"):
            values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class RaceStatement:
    """The race's conclusion. ``status``: "best" (``recommended`` beat every other recipe), "indistinguishable"
    (the ``survivors`` differ by less than the margin: take the cheapest) or "undecided" (the budget ran out
    first; ``leading`` has the best mean of the last round, which is not a claim). ``settled``: every
    elimination, with its interval; ``unsettled``: the last round's comparisons among the survivors. All claims
    hold together with probability ≥ 1 − ``alpha``."""

    status: str
    recommended: str | None
    leading: str | None
    survivors: tuple[str, ...]
    settled: tuple[Elimination, ...]
    unsettled: tuple[Comparison, ...]
    alpha: float
    rounds: int
    lines: tuple[str, ...]

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(value):
    """Tuples as lists, all the way down (asdict keeps them)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _check_history(rounds: Sequence[RoundResult]) -> None:
    if not rounds:
        raise PyitaError("a race statement needs at least one round")
    first = rounds[0]
    for k, r in enumerate(rounds, start=1):
        if r.round_index != k:
            raise PyitaError(f"race rounds must be 1, 2, … in order: round {k} is numbered {r.round_index}")
        same = ("max_rounds", "race_alpha", "metric", "direction", "transform", "margin")
        if any(getattr(r, name) != getattr(first, name) for name in same):
            raise PyitaError(f"round {k} was decided with other settings than round 1 ({', '.join(same)})")
        if k > 1 and set(r.entrants) != set(rounds[k - 2].survivors):
            raise PyitaError(f"round {k}'s recipes ({', '.join(r.entrants)}) are not the survivors of round "
                             f"{k - 1} ({', '.join(rounds[k - 2].survivors)})")
        if k < len(rounds) and r.status in FINAL:
            raise PyitaError(f"round {k} ended the race (status {r.status!r}) but round {k + 1} follows")


def final_statement(rounds: Sequence[RoundResult]) -> RaceStatement:
    """What the race settled and what it did not, from its rounds in order (when it stops or the budget ends)."""
    _check_history(rounds)
    last = rounds[-1]
    status = last.status if last.status in FINAL else "undecided"
    settled = tuple(e for r in rounds for e in r.eliminated)
    survivors = set(last.survivors)
    unsettled = tuple(c for c in last.comparisons if c.better in survivors and c.worse in survivors)
    margin = f"{100 * last.margin:g} %" if last.transform == "log" else f"{last.margin:g}"
    if status == "best":
        lines = [f"{last.survivors[0]} is the best recipe on {last.metric}: every other recipe was eliminated."]
    elif status == "indistinguishable":
        lines = [f"{', '.join(last.survivors)} differ by less than {margin} on {last.metric} (round "
                 f"{last.round_index}): take the cheapest."]
    else:
        lines = [f"Not settled after {len(rounds)} round{'s' if len(rounds) > 1 else ''}: "
                 f"{', '.join(last.survivors)} remain; {last.best} has the best mean of round {last.round_index} "
                 "without a significant lead."]
    lines += [f"Settled — round {e.round_index}: {e.recipe} eliminated: {e.reason}." for e in settled]
    lines += [f"{'Within the margin' if c.verdict == 'within margin' else 'Not settled'} — "
              f"{c.worse}: {c.text(last.metric, last.transform)}." for c in unsettled]
    lines.append(f"All claims hold together with probability ≥ {100 * (1 - last.race_alpha):g} % "
                 f"(each of {last.max_rounds} planned round{'s' if last.max_rounds > 1 else ''} at "
                 f"{100 * last.alpha:.3g} %).")
    return RaceStatement(status, last.survivors[0] if status == "best" else None,
                         last.best, tuple(last.survivors), settled, unsettled, last.race_alpha, len(rounds),
                         tuple(lines))
