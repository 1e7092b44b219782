"""Which recipe to use on one's own data (recommend). The settings' defaults live in
``pyita.recommend.rounds.RecommendSettings``; an option left out takes that default."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer

from pyita.choices import OBJECTIVES
from pyita.errors import PyitaError
from pyita.cli.app import CALC_HELP, LOG_FILE, QUIET, VERBOSE, app, choice, console, done

Objective = choice(OBJECTIVES)


def _default(name: str):
    from pyita.recommend.rounds import RecommendSettings

    return next(f.default for f in fields(RecommendSettings) if f.name == name)


def _setting(help_text: str, name: str, unit: str = ""):
    return typer.Option(None, help=f"{help_text} \\[default: {_default(name)}{unit}]")


@app.command()
def recommend(
    data: str = typer.Argument(..., help="Labelled structures (a folder of XSF files, an extended-XYZ file, "
                                         "sample:tio2-md, …)."),
    budget_minutes: float = typer.Option(..., "--budget-minutes", help="Compute budget of the whole command "
                                                                       "(the rounds and the final training)."),
    objective: Objective | None = _setting("What 'best' means: test energy MAE, force MAE, both (their geometric "
                                           "mean) or md (fraction of stable MD runs).", "objective"),
    trials: int | None = _setting("Paired trials per round (≥ 3).", "trials"),
    iterations: int | None = _setting("Training length of the last rounds and the final training (the first "
                                      "rounds train 1/9 and 1/3 of it).", "iterations"),
    max_rounds: int | None = _setting("Most rounds.", "max_rounds"),
    test_fraction: float | None = _setting("Share of each trial's structures held out for testing.",
                                           "test_fraction"),
    subset_size: int | None = typer.Option(None, help="Structures per trial (a seeded subset) \\[default: all]"),
    max_energy: float | None = typer.Option(None, help="Leave out structures this far above the lowest (eV/atom, "
                                                       "aenet's MAXENERGY)."),
    max_minutes: float | None = typer.Option(None, help="Training-time bound of every run (minutes)."),
    delta: float | None = _setting("δ of the absolute augmentation recipes.", "delta", " Å"),
    recipes: str | None = typer.Option(None, help="Race only these recipes (comma-separated names, as "
                                                  "recommendation.json names them); energy only always trains, "
                                                  "as the reference. \\[default: all]"),
    reference: str | None = typer.Option(None, "--reference", help="Choose δ from the Taylor error against this "
                                                                   "calculator (as `pyita check` does), instead "
                                                                   "of --delta. " + CALC_HELP),
    seed: int | None = _setting("Seed of every split, initial weights and derived structure.", "seed"),
    workers: int = typer.Option(2, help="Parallel training processes (a local pool)."),
    scheduler: str | None = typer.Option(None, help="Run the rounds' tasks on the Dask cluster of this scheduler."),
    scheduler_file: Path | None = typer.Option(None, help="… or on the cluster whose scheduler wrote this file."),
    out: Path = typer.Option(Path("recommendation"), "--out", "-o", help="Output folder (must be new or empty)."),
    resume: bool = typer.Option(False, help="Continue an interrupted recommendation in OUT (same settings)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Decide which way to use the forces is best on your data within a compute budget, and train it.

    Races the recipes (energy only, absolute augmentation, the parent–child loss, direct force training at
    several fractions, a combination) over rounds of paired trials that grow longer, dropping those confidently
    worse, with the whole procedure's false-recommendation rate held at 5 %; then trains the chosen recipe on all
    the data. Writes recommendation.json, report.md, model.pt, nn/ (aenet) and rounds/ (one experiment each)."""
    import time

    from pyita.recommend.rounds import RecommendSettings

    given = {"objective": objective, "trials": trials, "iterations": iterations, "max_rounds": max_rounds,
             "test_fraction": test_fraction, "subset_size": subset_size, "max_energy": max_energy,
             "max_minutes": max_minutes, "delta": delta, "seed": seed,
             "reference": reference,
             "recipes": recipes and tuple(name.strip() for name in recipes.split(",") if name.strip())}
    if reference is not None and delta is not None:
        raise PyitaError("--delta gives δ and --reference chooses it; give one of them")
    settings = RecommendSettings(data=data, budget_minutes=budget_minutes,
                                 **{k: v for k, v in given.items() if v is not None})
    from pyita.recommend import recommend as run_recommend

    started = time.perf_counter()
    result = run_recommend(settings, out, workers=workers, scheduler=scheduler,
                           scheduler_file=scheduler_file and str(scheduler_file), resume=resume,
                           progress=not quiet, say=lambda line: console.print(line, highlight=False))
    console.print(result["decision"], highlight=False)
    done(f"recommendation: {result['recipe']}", out, time.perf_counter() - started)
