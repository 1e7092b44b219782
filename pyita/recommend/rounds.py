"""What ``pyita recommend`` decides, and the experiments its rounds are: settings (every default here), the
objective a trial is scored by, the training length of each round and the experiment config of a round.

A round is an ordinary experiment of ``pyita experiment`` (its own folder, resumable, with its report), whose
conditions are the recipes still in the race, trained for that round's length on trials no other round uses."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from pyita.choices import OBJECTIVES
from pyita.errors import SettingError, whole_number
from pyita.recommend.recipes import Recipe

#: Training lengths of the rounds, as fractions of the final length: short runs drop the clearly worse, the
#: last rounds (at the full length) settle the close; every round after the third is at the full length too.
LENGTH_FRACTIONS = (1 / 9, 1 / 3, 1.0)
#: Shortest training of a round (iterations): below it a potential has barely left its initial weights.
MIN_ITERATIONS = 10
#: Round k's trials use the experiment seed ``seed + k · ROUND_SEED_STRIDE``: splits and weights no other round has.
ROUND_SEED_STRIDE = 7919
#: The per-trial number each objective compares, and whether lower is better. "both": the geometric mean of the
#: energy and force MAE, so that each counts by its relative change.
OBJECTIVE_METRICS = {"energy": ("energy_mae", "test energy MAE", "meV/atom", True),
                     "forces": ("force_mae", "test force MAE", "eV/Å", True),
                     "both": ("energy_force_gmean", "geometric mean of the test energy and force MAE", "", True),
                     "md": ("md_stable_fraction", "fraction of MD runs stable", "", False)}
#: The ``[md]`` table of a round when the objective is MD stability (the other keys: ``pyita md``'s defaults).
MD_TABLE = {"starts": 4, "replicas": 2, "temperature": 300.0, "steps": 500}


@dataclass(frozen=True)
class RecommendSettings:
    """Everything that decides a recommendation; recorded in recommend.json, and the same on ``--resume``."""

    data: str
    budget_minutes: float
    objective: str = "both"
    trials: int = 6                    # paired trials per round: 5 degrees of freedom (3 make the t tails too wide)
    iterations: int = 500              # the final training length (L-BFGS iterations); rounds train shorter first
    max_rounds: int = 3                # the three training lengths; each round gets a larger share of alpha
    seed: int = 0
    test_fraction: float = 0.25
    subset_size: int | None = None
    max_energy: float | None = None
    max_minutes: float | None = None   # training-time bound of each run
    delta: float = 0.03                # δ of the absolute augmentation recipes (Å)
    recipes: tuple[str, ...] | None = None   # the candidates to race (None: all); energy only always trains
    reference: str | None = None       # a calculator (as `pyita check` takes) whose Taylor errors choose δ

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise SettingError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("budget_minutes", "delta", "test_fraction") + (("max_minutes",) if self.max_minutes else ()):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SettingError(f"--{name.replace('_', '-')} must be a number > 0, got {value!r}")
        if not self.test_fraction < 1:
            raise SettingError(f"--test-fraction must be < 1, got {self.test_fraction:g}")
        whole_number(self.trials, "--trials", 3)   # a paired t interval needs 2 degrees of freedom at least
        whole_number(self.iterations, "--iterations", MIN_ITERATIONS)
        whole_number(self.max_rounds, "--max-rounds", 1)
        whole_number(self.seed, "--seed", 0)
        if self.subset_size is not None:
            whole_number(self.subset_size, "--subset-size", 4)

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def metric(self) -> tuple[str, str, str, bool]:
        """(column, what it is, unit, lower is better) of the objective."""
        return OBJECTIVE_METRICS[self.objective]


def round_length(settings: RecommendSettings, k: int) -> int:
    """Iterations of round ``k`` (1, 2, …)."""
    fraction = LENGTH_FRACTIONS[min(k, len(LENGTH_FRACTIONS)) - 1]
    return max(MIN_ITERATIONS, int(round(settings.iterations * fraction)))


def round_config(settings: RecommendSettings, k: int, recipes: list[Recipe], workers: int,
                 cluster: dict | None = None) -> dict:
    """The experiment config (as parsed TOML) of round ``k`` racing ``recipes`` (energy only among them: the
    baseline every round trains, in the race or not)."""
    experiment = {"name": f"recommend round {k}", "data": settings.data, "trials": settings.trials,
                  "seed": settings.seed + k * ROUND_SEED_STRIDE, "test_fraction": settings.test_fraction,
                  "workers": workers,
                  "description": f"pyita recommend, round {k}: {len(recipes)} recipes, {round_length(settings, k)} "
                                 f"iterations", **(cluster or {})}
    for key in ("subset_size", "max_energy"):
        if getattr(settings, key) is not None:
            experiment[key] = getattr(settings, key)
    trainer = {"iterations": round_length(settings, k)}
    if settings.max_minutes:
        trainer["max_minutes"] = settings.max_minutes
    raw = {"experiment": experiment, "trainer": trainer, "condition": [r.condition() for r in recipes]}
    if settings.objective == "md":
        raw["md"] = dict(MD_TABLE)
    return raw


def toml_text(raw: dict) -> str:
    """A config as TOML text (tables of numbers, strings, booleans and inline tables: what ``round_config``
    makes), for the round's config.toml, which ``pyita experiment`` can run again on its own."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v, ensure_ascii=False)   # a JSON string or finite number is a TOML one

    lines = ["# Written by pyita recommend: one round of its race, an experiment of its own."]
    for table in ("experiment", "trainer", "md"):
        if table in raw:
            lines += ["", f"[{table}]"] + [f"{k} = {value(v)}" for k, v in raw[table].items()]
    for condition in raw.get("condition", []):
        lines += ["", "[[condition]]"] + [f"{k} = {value(v)}" for k, v in condition.items()]
    return "\n".join(lines) + "\n"


def objective_values(settings: RecommendSettings, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """Per recipe, its per-trial objective (trials in order) from an experiment's per-trial table."""
    column = settings.metric[0]
    values = {}
    for name in names:
        mine = sorted((r for r in rows if r["condition"] == name), key=lambda r: r["trial"])
        if column == "energy_force_gmean":
            values[name] = np.sqrt(np.array([r["energy_mae"] * r["force_mae"] for r in mine], dtype=float))
        else:
            values[name] = np.array([r[column] for r in mine], dtype=float)
    return values
