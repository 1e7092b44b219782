"""``pyita recommend``: race the recipes over rounds of paired trials, stop when one is confidently best, when the
rest cannot be told apart or when the budget is spent, then train the chosen recipe on all the data.

Every number a decision rests on is read back from the rounds' saved results — the objective per trial and the
seconds each task took — never from the clock of this process, so a run killed and resumed makes the same
decisions. The budget is counted in task seconds over the parallel workers (what the rounds cost on the
machines that ran them), plus an estimate of the final training before a round is started."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyita.errors import PyitaError
from pyita.recommend.racing import race_round
from pyita.recommend.results import RoundResult, final_statement
from pyita.recommend.recipes import Recipe, candidate_recipes
from pyita.recommend.rounds import RecommendSettings, objective_values, round_config, round_length, toml_text

#: Folder of the rounds in the output folder (round-1, round-2, …: each an experiment folder).
ROUNDS = "rounds"


@dataclass
class RoundRecord:
    """One finished round: who raced, at what length, what each task cost, and what was decided."""

    round: int
    iterations: int
    recipes: list[str]
    values: dict[str, list[float]]
    seconds: dict[str, float]           # mean task seconds per recipe
    spent_seconds: float                # this round's task seconds over the workers
    decision: dict

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Race:
    settings: RecommendSettings
    rounds: list[RoundRecord] = field(default_factory=list)
    stopped_because: str = ""
    chosen: str = ""
    #: The race's conclusion (``pyita.recommend.results.RaceStatement``): what is settled and what is not.
    statement: dict = field(default_factory=dict)

    @property
    def spent_seconds(self) -> float:
        return sum(r.spent_seconds for r in self.rounds)


def available_recipes(settings: RecommendSettings) -> list[Recipe]:
    """The candidates asked for (``settings.recipes``), energy only — the reference — always first."""
    candidates = candidate_recipes(settings.delta)
    names = [r.name for r in candidates]
    unknown = sorted(set(settings.recipes or ()) - set(names))
    if unknown:
        raise PyitaError(f"--recipes: unknown {', '.join(map(repr, unknown))}; the recipes are "
                         + ", ".join(map(repr, names)))
    return [r for r in candidates if settings.recipes is None or r.name in settings.recipes or r is candidates[0]]


def round_cost(record: RoundRecord, racing: list[str], iterations: int, trials: int, workers: int) -> float:
    """Seconds a round of ``racing`` at ``iterations`` should take, from what each recipe's tasks took in the
    round ``record`` (time grows with the iterations; a task's fixed part — reading, featurising — is counted
    as if it grew too, which errs on the safe side)."""
    scale = iterations / record.iterations
    return sum(record.seconds[name] for name in racing) * scale * trials / workers


def final_cost(record: RoundRecord, racing: list[str], iterations: int, pool_fraction: float) -> float:
    """Seconds of the final training on all the data (the costliest recipe still racing), from ``record``."""
    return max(record.seconds[name] for name in racing) * iterations / record.iterations / pool_fraction


def run_race(settings: RecommendSettings, out: Path, recipes: list[Recipe], *, workers: int,
             cluster: dict | None = None, client=None, progress: bool = True, say=print) -> Race:
    """The rounds, in ``out/rounds`` (their tasks on the Dask ``client`` when given); returns the race with its
    decision (``chosen``), why it stopped, and what it settled (``statement``)."""
    race = _rounds(settings, out, recipes, workers=workers, cluster=cluster, client=client, progress=progress,
                   say=say)
    race.statement = final_statement([RoundResult.from_dict(r.decision) for r in race.rounds]).to_dict()
    return race


def _rounds(settings: RecommendSettings, out: Path, recipes: list[Recipe], *, workers: int,
            cluster: dict | None, client, progress: bool, say) -> Race:
    from pyita.experiment.analysis import per_trial_table
    from pyita.experiment.config import parse_config
    from pyita.experiment.report import write_report
    from pyita.experiment.results import load_results
    from pyita.experiment.runner import experiment_output
    from pyita.experiment.tasks import run_trials, unfinished

    race = Race(settings)
    racing = [r.name for r in recipes]
    by_name = {r.name: r for r in recipes}
    budget = settings.budget_minutes * 60.0
    _, label, unit, lower = settings.metric
    for k in range(1, settings.max_rounds + 1):
        iterations = round_length(settings, k)
        if race.rounds:
            last = race.rounds[-1]
            needed = round_cost(last, racing, iterations, settings.trials, workers)
            needed += final_cost(last, racing, settings.iterations, 1.0 - settings.test_fraction)
            if race.spent_seconds + needed > budget:
                race.stopped_because = (f"budget: round {k} ({len(racing)} recipes × {settings.trials} trials × "
                                        f"{iterations} iterations) and the final training need ≈ "
                                        f"{needed / 60:.1f} min more, {max(0.0, budget - race.spent_seconds) / 60:.1f} "
                                        "min are left")
                break
        baseline = by_name[recipes[0].name]
        entrants = [baseline] + [by_name[n] for n in racing if n != baseline.name]
        raw = round_config(settings, k, entrants, workers, cluster)
        folder = out / ROUNDS / f"round-{k}"
        config = parse_config(raw, folder / "config.toml")
        reference = "" if baseline.name in racing else f" (+ {baseline.name}, the reference)"
        say(f"round {k}: {len(racing)} recipes{reference} × {settings.trials} trials, {iterations} iterations")
        with experiment_output(folder, config, toml_text(raw), resume=True):
            run = run_trials(config, folder, progress_enabled=progress, client=client)
            summary = write_report(config, folder)
            if run.missing:
                raise unfinished(run, folder, summary)
        rows = per_trial_table(config, load_results(config, folder))
        values = objective_values(settings, rows, racing)
        seconds = {c.name: float(np.mean([r["seconds"] for r in rows if r["condition"] == c.name]))
                   for c in config.conditions}
        decision = race_round({n: values[n] for n in racing}, k, settings.max_rounds,
                              direction="lower" if lower else "higher", transform="log" if lower else "raw",
                              metric=label + (f" ({unit})" if unit else ""))
        record = RoundRecord(k, iterations, list(racing), {n: v.tolist() for n, v in values.items()}, seconds,
                             sum(r["seconds"] for r in rows) / workers, decision.to_dict())
        race.rounds.append(record)
        say(f"round {k}: best mean {decision.best!r}; "
            + ("; ".join(f"{e.recipe} out ({e.reason})" for e in decision.eliminated) or "none out")
            + f" → {decision.status}")
        racing = list(decision.survivors)
        if decision.status == "best":
            race.chosen = decision.survivors[0]
            race.stopped_because = f"{race.chosen!r} is confidently best ({label})"
            return race
        if decision.status == "indistinguishable":
            race.chosen = min(racing, key=lambda n: seconds[n])
            race.stopped_because = (f"the {len(racing)} recipes left cannot be told apart ({label}); "
                                    f"{race.chosen!r} is the cheapest of them")
            return race
    else:
        race.stopped_because = f"all {settings.max_rounds} rounds run without a decision"
    race.chosen = race.rounds[-1].decision["best"]
    race.stopped_because += (f"; {race.chosen!r} has the best mean of the {len(racing)} recipes still racing, "
                             "which is not settled")
    return race


def check_budget(settings: RecommendSettings, n_recipes: int, probe_seconds: float, workers: int) -> None:
    """Refuse, before any output, a budget below what round 1 takes at the very least: every one of its tasks
    costs more than the probe (a 3-iteration energy-only training of one trial)."""
    at_least = n_recipes * settings.trials * probe_seconds / workers
    if at_least > settings.budget_minutes * 60.0:
        raise PyitaError(f"--budget-minutes {settings.budget_minutes:g} is too small for one round: round 1 trains "
                         f"{n_recipes} recipes × {settings.trials} trials, at least {at_least / 60:.1f} min on "
                         f"{workers} worker(s) (each task costs more than the {probe_seconds:.1f} s of a "
                         "3-iteration energy-only training); give a larger budget or fewer --trials")

