"""The one typed schema of an experiment config: its tables, their keys, and each key's type and range.

``check_tables`` holds a parsed TOML config (with the command line's overrides) against it before anything
is written, and turns the first failure into one line naming the table, the key, what it allows and the value
as given (``trials = "2"``: a string). The schema says what may be given, never a default: those live with
the settings themselves (``ExperimentConfig``, ``TrainSettings``, ``AenetSettings``, ``AugmentSettings``),
whose own checks of values (a training method, a hidden-layer spec, δ) run right after, on the same tables.
The trainer keys are ``TrainSettings``' record keys, with their types, so a new setting is known here at once.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from ase.data import chemical_symbols
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from pyita.choices import BACKENDS
from pyita.errors import InputError, PyitaError
from pyita.train.settings import TrainSettings

__all__ = ["check_tables", "shown"]


def _key(allowed: str, **constraints) -> Any:
    """A key that may be given (none is required here); ``allowed`` is what the error line says it takes."""
    return Field(None, description=allowed, **constraints)


class _Table(BaseModel):
    """Only the keys declared, each of exactly its type (no "2" for 2, no true for 1), numbers finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ExperimentTable(_Table):
    name: str = _key("a string")
    data: str = _key("a data path, glob or sample[:name]", min_length=1)
    subset_size: int = _key("an integer ≥ 4", ge=4)
    trials: int = _key("an integer ≥ 1", ge=1)
    seed: int = _key("an integer ≥ 0", ge=0)
    test_fraction: float = _key("a number between 0 and 1 (both excluded)", gt=0, lt=1)
    max_energy: float = _key("a finite number (eV/atom above the reference energies)")
    reference_energies: dict[str, float] = _key("a table of element = finite energy in eV, e.g. { Ti = -1626.67 }")
    energy_key: str = _key("the key of the reference energy in an extended-XYZ data file, e.g. \"REF_energy\"",
                           min_length=1)
    forces_key: str = _key("the key of the reference forces in an extended-XYZ data file, e.g. \"REF_forces\"",
                           min_length=1)
    backend: Literal[BACKENDS] = _key("one of " + ", ".join(f'"{b}"' for b in BACKENDS))
    aenet_bin: str = _key("a folder path")
    workers: int = _key("an integer ≥ 1", ge=1)
    scheduler: str = _key("a Dask scheduler address, e.g. \"tcp://host:8786\"", min_length=1)
    scheduler_file: str = _key("a path to a Dask scheduler file (as `dask scheduler --scheduler-file` writes)",
                               min_length=1)
    max_memory: float = _key("a finite number of GiB > 0 (each task's memory, embedded trainer)", gt=0)
    description: str = _key("a string")

    @field_validator("reference_energies")
    @classmethod
    def _elements(cls, value: dict) -> dict:
        unknown = [k for k in value if k not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not an element symbol")
        return value


def _described(hint) -> str:
    """What a TrainSettings type accepts, in words."""
    if get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_described(a) for a in get_args(hint) if a is not type(None))
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table"}.get(get_origin(hint) or hint, str(hint))


_HINTS = TrainSettings.record_types()
#: The experiment's names for settings the trainers take under other names or only here.
_TRAINER_EXTRAS = {
    "iterations": (int, _key("an integer ≥ 1", ge=1)),
    "early_stopping": (int, _key("an integer ≥ 1 (epochs without improvement)", ge=1)),
    "validation_fraction": (float, _key("a number ≥ 0 and < 1", ge=0, lt=1)),
    "keep_runs": (bool, _key("true or false (aenet: keep each run folder)")),
    "method_params": (dict[str, int | float], _key("a table of aenet method parameters, e.g. { mu = 0.001 }")),
    "sampling": (str, _key("a string (aenet's SAMPLING)")),
}
TrainerTable = create_model(
    "TrainerTable", __base__=_Table,
    **{**{name: (hint | None, _key(_described(hint))) for name, hint in _HINTS.items()}, **_TRAINER_EXTRAS})
ConditionTrainerTable = create_model(
    "ConditionTrainerTable", __base__=TrainerTable,
    iterations=(Annotated[int, Field(ge=1)] | Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)],
                _key("an integer ≥ 1, or an array of them (a sweep)")))

_NUMBER_OR_SWEEP = float | Annotated[list[float], Field(min_length=1)]


class AugmentTable(_Table):
    strategy: str = _key("a string (sequential, balanced or random-all)")
    a: _NUMBER_OR_SWEEP = _key("a number (new structures per parent), or an array of them (a sweep)")
    delta: _NUMBER_OR_SWEEP = _key("a number (Å), or an array of them (a sweep)")
    on_the_fly: bool = _key("true or false")
    weight: float = _key("a number ≥ 0 (loss weight of derived structures)")
    max_force: float = _key("a number (eV/Å)")
    parent_child_weight: float = _key("a number ≥ 0")


class ConditionTable(_Table):
    name: str = Field(description="a string")
    augment: AugmentTable = _key("a table, e.g. { strategy = \"balanced\", a = 4, delta = 0.03 }")
    trainer: ConditionTrainerTable = _key("a table of trainer settings, e.g. { iterations = 100 }")
    init_seed_offset: int = _key("an integer in [0, 2**31)", ge=0, lt=2**31)
    backend: Literal[BACKENDS] = _key("one of " + ", ".join(f'"{b}"' for b in BACKENDS))


class MDTable(_Table):
    """``MDSettings``' keys (their defaults and finer checks live there) and the reference calculator."""

    starts: int = _key("an integer ≥ 1 (test parents per trial to start from)", ge=1)
    replicas: int = _key("an integer ≥ 1 (runs per starting structure)", ge=1)
    temperature: float = _key("a number ≥ 0 (K)", ge=0)
    steps: int = _key("an integer ≥ 1", ge=1)
    timestep: float = _key("a number > 0 (fs)", gt=0)
    ensemble: str = _key("\"nve\" or \"nvt\"")
    friction: float = _key("a number > 0 (1/fs, NVT)", gt=0)
    write_every: int = _key("an integer ≥ 1 (steps between the frames the reference labels)", ge=1)
    seed: int = _key("an integer ≥ 0 (added to each trial's seed for the velocities)", ge=0)
    min_distance_fraction: float = _key("a number between 0 and 1", gt=0, lt=1)
    max_bond_stretch: float = _key("a number > 1", gt=1)
    max_temperature_factor: float = _key("a number > 1", gt=1)
    max_drift: float = _key("a number > 0 (meV/atom, NVE)", gt=0)
    reference: str = _key("a calculator spec as `pyita check` takes, e.g. \"gfn1-xtb\"", min_length=1)
    reference_every: int = _key("an integer ≥ 1 (label every k-th trajectory frame)", ge=1)


class ConfigTables(_Table):
    experiment: ExperimentTable = _key("a table ([experiment])")
    trainer: TrainerTable = _key("a table ([trainer])")
    condition: list[ConditionTable] = _key("an array of tables ([[condition]] … entries)")
    md: MDTable = _key("a table ([md])")


_TABLE_NAMES = {"experiment": "[experiment]", "trainer": "[trainer]", "condition": "[[condition]]", "md": "[md]"}


def check_tables(raw: Any, path, overrides: dict | None = None) -> None:
    """Refuse, in one line, a config whose tables or keys are not the schema's. ``overrides`` are the command
    line's values of [experiment] keys, checked alike and named by their option when wrong."""
    if not isinstance(raw, dict):
        raise InputError(f"a config is a TOML table, got {shown(raw)}", path)
    overrides = overrides or {}
    merged = dict(raw)
    if overrides and isinstance(raw.get("experiment", {}), dict):
        merged["experiment"] = {**raw.get("experiment", {}), **overrides}
    try:
        ConfigTables.model_validate(merged)
    except ValidationError as exc:
        message, by_option = _explain(exc.errors()[0], merged, overrides)
        raise (PyitaError(message) if by_option else InputError(message, path)) from None


def _explain(error: dict, raw: dict, overrides: dict) -> tuple[str, bool]:
    """The line that names the key a schema error is about, what it allows and what it got; and whether the
    key came from a command-line option."""
    loc = list(error["loc"])
    top = loc.pop(0)
    if top not in ConfigTables.model_fields:
        return f"unknown table {top!r}; a config has [experiment], [trainer], [[condition]] and [md]", False
    model, value = ConfigTables.model_fields[top].annotation, raw[top]
    label = _TABLE_NAMES[top] + " "   # how the key's table is named before the key
    where = _TABLE_NAMES[top]          # how an unknown key's table is named
    prefix = ""
    if top == "condition":
        if not loc:
            return f"condition must be an array of tables ([[condition]] entries), got {shown(value)}", False
        index = loc.pop(0)
        value = value[index]
        name = value.get("name") if isinstance(value, dict) else None
        prefix = f"condition {name!r}: " if isinstance(name, str) else f"[[condition]] number {index + 1}: "
        if not loc:
            return f"{prefix}a condition must be a table, got {shown(value)}", False
        model, label, where = ConditionTable, "", "[[condition]]"
        if loc[0] in ("augment", "trainer") and len(loc) > 1:
            sub = loc.pop(0)
            model, value, label, where = ConditionTable.model_fields[sub].annotation, value[sub], f"{sub}.", sub
    if not loc:
        return f"{prefix}{where} must be a table, got {shown(value)}", False
    key = loc[0]
    by_option = top == "experiment" and key in overrides
    spelled = f"--{key.replace('_', '-')}" if by_option else f"{label}{key}"
    if error["type"] == "extra_forbidden":
        return f"{prefix}unknown {where} key {key!r}; allowed: {', '.join(model.model_fields)}", False
    allowed = model.model_fields[key].description
    if error["type"] == "missing":
        return f"{prefix}{label.strip() or 'a condition'} needs {key} = … ({allowed})", False
    why = error.get("ctx", {}).get("error")
    return f"{prefix}{spelled} must be {allowed}; got {shown(value[key])}" + (f" ({why})" if why else ""), by_option


_TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
               dict: "a table"}


def shown(value: Any) -> str:
    """A value as TOML spells it, and its TOML type: ``"3" (a string)``, ``true (a boolean)``."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, default=str)
    except ValueError:   # nan and inf
        text = str(value)
    if len(text) > 60:
        text = text[:57] + "…"
    kind = next((name for t, name in _TOML_TYPES.items() if isinstance(value, t)), type(value).__name__)
    return f"{text} ({kind})"
