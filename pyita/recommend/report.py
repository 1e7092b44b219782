"""What a recommendation leaves: recommendation.json (the decision, every round's evidence, the time spent, the
files of the final potential, the command that reproduces it) and report.md, decision first."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from pyita import __version__
from pyita.io.atomic import atomic_write_text
from pyita.io.records import json_text
from pyita.recommend.race import ROUNDS, Race
from pyita.recommend.recipes import Recipe

RECOMMENDATION = "recommendation.json"
REPORT = "report.md"


def reproduce_command(race: Race) -> str:
    """The one command that makes this recommendation again (into ``recommendation-again``)."""
    s = race.settings
    args = ["pyita", "recommend", s.data, "--budget-minutes", f"{s.budget_minutes:g}", "--objective", s.objective,
            "--trials", str(s.trials), "--iterations", str(s.iterations), "--max-rounds", str(s.max_rounds),
            "--test-fraction", f"{s.test_fraction:g}", "--seed", str(s.seed)]
    args += ["--reference", s.reference] if s.reference is not None else ["--delta", f"{s.delta:g}"]
    if s.recipes is not None:
        args += ["--recipes", ",".join(s.recipes)]
    for name in ("subset_size", "max_energy", "max_minutes"):
        if getattr(s, name) is not None:
            args += [f"--{name.replace('_', '-')}", f"{getattr(s, name):g}"]
    return shlex.join(args + ["--out", "recommendation-again"])


def decision_text(race: Race, chosen: Recipe) -> str:
    """The decision in one paragraph: what to use, and how sure the race is."""
    return f"Use {chosen.name!r} ({chosen.description}). Why: {race.stopped_because}."


def write_recommendation(race: Race, chosen: Recipe, final: dict, out: Path) -> dict:
    """Write recommendation.json and report.md into ``out``; returns the JSON's content."""
    record = {"command": "recommend", "pyita_version": __version__, "settings": race.settings.as_dict(),
              "seed": race.settings.seed, "recipe": chosen.name, "recipe_description": chosen.description,
              "augment": chosen.augment, "trainer": chosen.trainer, "decision": decision_text(race, chosen),
              "stopped_because": race.stopped_because,
              "statement": race.statement,
              "rounds": [r.to_dict() for r in race.rounds], "rounds_folder": ROUNDS,
              "seconds": {"rounds": round(race.spent_seconds, 1), "final_training": final["train_seconds"]},
              "final": final, "reproduce": reproduce_command(race)}
    atomic_write_text(out / RECOMMENDATION, json_text(record, indent=1, ensure_ascii=False))
    atomic_write_text(out / REPORT, _markdown(race, record))
    return record


def _markdown(race: Race, record: dict) -> str:
    column, label, unit, lower = race.settings.metric
    lines = [f"# Recommendation: {record['recipe']}", "", record["decision"], "",
             f"Objective: {label}{f' ({unit})' if unit else ''}, {'lower' if lower else 'higher'} is better; "
             f"{race.settings.trials} paired trials per round on `{race.settings.data}`.", ""]
    lines += ["## Evidence", ""]
    for r in race.rounds:
        lines += [f"### Round {r.round}: {r.iterations} iterations, {len(r.recipes)} recipes "
                  f"(`{ROUNDS}/round-{r.round}/report.md`)", "",
                  "| recipe | mean | per trial | task seconds | outcome |", "|---|---|---|---|---|"]
        outcome = {e["recipe"]: f"out: {e['reason']}" for e in r.decision["eliminated"]}
        outcome.update({n: "best mean" for n in [r.decision["best"]] if n not in outcome})
        for name in r.recipes:
            values = np.array(r.values[name], dtype=float)
            lines.append(f"| {name} | {np.mean(values):.4g} | {', '.join(f'{v:.3g}' for v in values)} | "
                         f"{r.seconds[name]:.1f} | {outcome.get(name, '')} |")
        lines += [""] + [f"- {note}" for note in r.decision["notes"]] + [""]
    lines += ["## What is settled", ""] + [f"- {line}" for line in race.statement["lines"]] + [""]
    final = record["final"]
    lines += ["## Time", "", f"Rounds: {record['seconds']['rounds'] / 60:.1f} min of tasks over the workers; final "
              f"training: {final['train_seconds'] / 60:.1f} min ({final['epochs']} epochs on {final['structures']} "
              f"structures{' + ' + str(final['derived']) + ' derived' if final['derived'] else ''}).", "",
              "## Files", "", f"- `{final['model']}`: the potential (`pyita predict`, `pyita md`, ASE's "
              "`PyitaCalculator`)", f"- `{final['networks']}/`: the same as aenet .nn files (predict.x, LAMMPS)"]
    if "augmented" in final:
        lines.append(f"- `{final['augmented']}/`: the augmented set with its generate.in, for aenet's train.x")
    lines += ["", "Made again by:", "", "```bash", record["reproduce"], "```", ""]
    return "\n".join(lines)
