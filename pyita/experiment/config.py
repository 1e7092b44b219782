"""Experiment configuration: a TOML file (or a bundled preset) naming data, trials, conditions, trainer.

A condition is a name plus what it changes: an ``augment`` table (strategy, a, delta, on_the_fly, weight;
lists of a and delta expand into a sweep), a ``trainer`` table overriding the shared trainer
settings (e.g. ``force_weight`` for direct force training), and/or ``init_seed_offset`` (an integer; 0, the
default, changes nothing): other initial weights (those of seed trial seed + offset) and nothing else — the
same subset, split, batches and augmentation draws. A
condition that differs from the baseline only in ``init_seed_offset`` is an A/A check: it should come out
"no detectable difference" in about 95 % of experiments.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
import warnings
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

from pyita.augment.settings import DEFAULT_DELTA, AugmentSettings
from pyita.backends import check_settings
from pyita.choices import PRESETS
from pyita.errors import InputError, PyitaError
from pyita.experiment.results import refuse_shared_file_names
from pyita.experiment.schema import check_tables
from pyita.reference import check_max_energy, check_reference_energies
from pyita.structure import LabelKeys

_PATH_KEYS = ("data", "aenet_bin", "scheduler_file")
#: Where tasks run on a Dask cluster: its scheduler's address, or the file that names it; one of them.
_SCHEDULER_KEYS = ("scheduler", "scheduler_file")


@dataclass
class Condition:
    name: str
    augment: dict | None = None
    trainer: dict = field(default_factory=dict)
    #: Added to the trial's model seed for the initial weights only (0: the trial's own weights).
    init_seed_offset: int = 0
    #: The trainer of this condition when it is not the experiment's (None: the experiment's backend).
    backend: str | None = None

    @property
    def is_baseline(self) -> bool:
        """No augmentation, the trial's own initial weights, the experiment's trainer and no trainer change
        beyond the training length (the reference of its length)."""
        return (self.augment is None and set(self.trainer) <= {"iterations"} and not self.init_seed_offset
                and self.backend is None)


@dataclass
class ExperimentConfig:
    name: str
    data: str
    trials: int = 5
    seed: int = 0
    subset_size: int | None = None
    test_fraction: float = 0.1
    max_energy: float | None = None
    reference_energies: dict[str, float] | None = None
    #: Keys of the labels in an extended-XYZ data file (None: ``pyita.structure.LabelKeys``' default lookup).
    energy_key: str | None = None
    forces_key: str | None = None
    backend: str = "embedded"
    #: Folder of aenet's executables for ``backend = "aenet"`` (None: AENET_BIN, then PATH).
    aenet_bin: str | None = None
    workers: int = 2
    #: A Dask scheduler's address; else ``scheduler_file``, the file it wrote (None for both: a local run).
    scheduler: str | None = None
    scheduler_file: str | None = None
    #: GiB each task may use (embedded trainer: ``RuntimeSettings.max_memory``); where tasks run, not what they
    #: compute, so free to change on resume.
    max_memory: float | None = None
    description: str = ""
    trainer: dict = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    #: Conditions the backend cannot train, left out, with the reason (aenet: force training, on the fly, …).
    left_out: dict[str, str] = field(default_factory=dict)
    #: The [md] table with every setting filled in (``pyita.experiment.md``); None: no MD.
    md: dict | None = None

    def as_dict(self) -> dict:
        """All settings; a condition's ``init_seed_offset`` and ``backend``, and ``aenet_bin``, ``scheduler_file``,
        ``max_memory``, ``left_out``, ``md`` and the label keys, only when set, so the record (experiment.json) of an
        experiment without them reads as before and ``--resume`` still recognises it."""
        d = asdict(self)
        for condition in d["conditions"]:
            for key in ("init_seed_offset", "backend"):
                if not condition[key]:
                    del condition[key]
        for key in ("aenet_bin", "scheduler_file", "max_memory", "left_out", "energy_key", "forces_key", "md"):
            if not d[key]:
                del d[key]
        return d

    @property
    def label_keys(self) -> LabelKeys:
        return LabelKeys(self.energy_key, self.forces_key)

    @classmethod
    def from_record(cls, record, path: str | Path) -> ExperimentConfig:
        """The experiment that ``as_dict`` recorded (experiment.json): the settings its results were trained
        with. Anything else is an InputError naming ``path``."""
        names = {f.name for f in fields(cls)}
        try:
            if not isinstance(record, dict) or not {"name", "data", "conditions"} <= record.keys():
                raise TypeError("not an experiment record")
            settings = {k: v for k, v in record.items() if k in names and k != "conditions"}
            return cls(**settings, conditions=[Condition(**c) for c in record["conditions"]])
        except TypeError as exc:
            raise InputError(f"not an experiment record of PyITA ({exc})", path) from None


def first_difference(recorded, given, where: str = "") -> str | None:
    """The first setting in which two ``as_dict`` records differ, as "key: A recorded, B given" (None: equal)."""
    if isinstance(recorded, dict) and isinstance(given, dict):
        for key in list(recorded) + [k for k in given if k not in recorded]:
            found = first_difference(recorded.get(key), given.get(key), f"{where}.{key}" if where else str(key))
            if found:
                return found
        return None
    if isinstance(recorded, list) and isinstance(given, list):
        for k, (a, b) in enumerate(zip(recorded, given)):
            found = first_difference(a, b, f"{where}[{k}]")
            if found:
                return found
        if len(recorded) != len(given):
            return f"{where}: {len(recorded)} entries recorded, {len(given)} given"
        return None
    return None if recorded == given else f"{where or 'settings'}: {recorded!r} recorded, {given!r} given"


_PRESETS_DIR = Path(str(resources.files("pyita.experiment") / "presets"))


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise PyitaError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return _PRESETS_DIR / f"{name}.toml"


def read_config_text(path: str | Path | None = None, preset: str | None = None) -> tuple[str, Path]:
    """The TOML text of a config file or bundled preset, and where it came from. TOML is UTF-8; a byte-order
    mark that some Windows editors put first is dropped."""
    if (path is None) == (preset is None):
        raise InputError("give either a config file or --preset")
    path = preset_path(preset) if preset else Path(path)
    try:
        return path.read_bytes().decode("utf-8-sig"), path
    except OSError as exc:
        raise InputError(f"cannot read config: {exc}", path) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (TOML must be): byte {exc.object[exc.start]:#04x} at offset "
                         f"{exc.start}", path) from None


def parse_toml(text: str, path) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise InputError(f"invalid TOML: {exc}", path, int(found.group(1)) if found else None) from None


def parse_config(raw: dict, path: str | Path = "<config>", overrides: dict | None = None) -> ExperimentConfig:
    """The experiment a parsed config describes, every setting checked: the tables' shapes and types against
    the schema, then each condition's values by the trainer and augmentation that will use them."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    check_tables(raw, path, overrides)
    exp = dict(raw.get("experiment", {}))
    # Paths are recorded absolute: a config file's own from its folder, --data/--aenet-bin and the presets'
    # from the current one.
    if Path(str(path)).parent != _PRESETS_DIR:
        exp = _absolute_paths(exp, Path(str(path)).parent)
    given = [k for k in _SCHEDULER_KEYS if k in overrides]
    if len(given) > 1:
        raise PyitaError("--scheduler and --scheduler-file both say where the Dask scheduler is; give one of them")
    if given:   # the command line's choice of scheduler replaces the config's
        exp = {k: v for k, v in exp.items() if k not in _SCHEDULER_KEYS}
    exp.update(overrides)
    exp = _absolute_paths(exp, Path.cwd())
    if "data" not in exp:
        raise InputError("[experiment] needs data = …", path)
    exp.setdefault("name", Path(str(path)).stem)
    config = ExperimentConfig(**exp, trainer=dict(raw.get("trainer", {})))
    if "md" in raw:
        from pyita.experiment.md import checked_md

        config.md = checked_md(raw["md"], path)
    for entry in raw.get("condition", []):
        config.conditions += _expand_condition(entry)
    if not any(c.is_baseline for c in config.conditions):
        config.conditions.insert(0, Condition("baseline"))
    for condition in config.conditions:
        if condition.backend == config.backend:   # the experiment's own trainer, named again
            condition.backend = None
    _validate(config, path)
    _leave_out_what_aenet_cannot(config, path)
    _check_values(config, path)
    _check_cluster(config, path)
    return config


def _check_cluster(config: ExperimentConfig, path) -> None:
    """One scheduler setting at most, and nothing a cluster's workers cannot do: they do not write to the
    experiment folder, where aenet's ``keep_runs`` keeps its run folders."""
    if config.scheduler and config.scheduler_file:
        raise InputError("[experiment] scheduler and scheduler_file both say where the Dask scheduler is; give "
                         "one of them", path)
    if not (config.scheduler or config.scheduler_file):
        return
    keeping = [c.name for c in config.conditions
               if backend_of(config, c) == "aenet" and {**config.trainer, **c.trainer}.get("keep_runs")]
    if keeping:
        raise InputError(f"keep_runs = true (condition {keeping[0]!r}) keeps aenet's run folders in the "
                         "experiment folder, which Dask workers do not write to; drop keep_runs or run without "
                         "a scheduler", path)


def backend_of(config: ExperimentConfig, condition: Condition) -> str:
    return condition.backend or config.backend


def _leave_out_what_aenet_cannot(config: ExperimentConfig, path) -> None:
    """Drop the conditions an experiment-wide ``backend = "aenet"`` cannot train (so that every preset runs
    on either backend), recording which and why in ``config.left_out``. A condition that asks for aenet
    itself, a baseline aenet cannot train, or nothing left to compare, is an error."""
    from pyita.backends.aenet.experiment import unsupported

    kept = []
    for condition in config.conditions:
        why = unsupported(condition.augment, {**config.trainer, **condition.trainer}) \
            if backend_of(config, condition) == "aenet" else None
        if why is None:
            kept.append(condition)
        elif condition.is_baseline:
            raise InputError(f"backend aenet cannot train the baseline: {why}", path)
        elif condition.backend == "aenet":
            raise InputError(f"condition {condition.name!r} asks for backend aenet, but {why}", path)
        else:
            config.left_out[condition.name] = why
    if not config.left_out:
        return
    if len(kept) < 2:
        raise InputError("backend aenet can train none of the conditions besides the baseline ("
                         + "; ".join(f"{name}: {why}" for name, why in config.left_out.items()) + ")", path)
    config.conditions = kept


def _absolute_paths(table: dict, base: Path) -> dict:
    """The table with its paths made absolute from ``base`` (a bundled ``sample:`` name stays as it is), so
    that experiment.json names the same data whichever folder the experiment is started or resumed from."""
    def absolute(text: str) -> str:
        if text == "sample" or text.startswith("sample:") or os.path.isabs(text):
            return text
        return os.path.normpath(base.absolute() / text)

    return {k: absolute(str(v)) if k in _PATH_KEYS and v is not None else v for k, v in table.items()}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _expand_condition(entry: dict) -> list[Condition]:
    """One condition per combination of listed values: ``augment.a``, ``augment.delta`` and
    ``trainer.iterations`` may be lists (a sweep); each variant is named after its values."""
    augment = entry.get("augment")
    trainer = dict(entry.get("trainer", {}))
    if augment is not None:
        a_list, d_list = _as_list(augment.get("a", 4)), _as_list(augment.get("delta", DEFAULT_DELTA))
    else:
        a_list = d_list = [None]
    offset = entry.get("init_seed_offset", 0)
    backend = entry.get("backend")
    it_list = _as_list(trainer.get("iterations", None))
    out = []
    for a, delta, iterations in itertools.product(a_list, d_list, it_list):
        name = entry["name"]
        if len(a_list) > 1:
            name += f" a={a:g}"
        if len(d_list) > 1:
            name += f" δ={delta:g}"
        if len(it_list) > 1:
            name += f" it={iterations}"
        aug = None if augment is None else {**augment, "a": a, "delta": delta,
                                            "strategy": augment.get("strategy", AugmentSettings.strategy)}
        overrides = dict(trainer) if iterations is None else {**trainer, "iterations": iterations}
        out.append(Condition(name, aug, overrides, offset, backend))
    return out


def _validate(config: ExperimentConfig, path) -> None:
    names = [c.name for c in config.conditions]
    if len(set(names)) != len(names):
        raise InputError(f"condition names repeat: {names}", path)
    try:   # NaN or inf would filter or shift every energy silently
        refuse_shared_file_names(names)
        config.max_energy = check_max_energy(config.max_energy)
        config.reference_energies = check_reference_energies(config.reference_energies)
        LabelKeys(config.energy_key, config.forces_key)   # its own check of the key names
    except PyitaError as exc:
        raise InputError(str(exc), path) from None
    for where, table in [("[trainer]", config.trainer)] + [(f"condition {c.name!r}", c.trainer)
                                                             for c in config.conditions]:
        if "max_memory" in table:
            raise InputError(f"{where}: max_memory is where a task runs, not what it trains: give it in "
                             "[experiment] (or --max-memory), where it may change on --resume", path)
        fixed = sorted({"seed", "init_seed"} & set(table))
        if fixed:
            raise InputError(f"{where}: {', '.join(fixed)} cannot be set here: each trial draws its own seed "
                             "from [experiment] seed; a condition's init_seed_offset gives it other initial "
                             "weights", path)


def _check_values(config: ExperimentConfig, path) -> None:
    """Each trainer's and the augmentation's own checks of values (a method, hidden layers, δ, …), made now
    on what every condition will train with: [trainer] alone first, so that its mistakes are named there."""
    tables = [("[trainer]", config.backend, config.trainer, None)] + [
        (f"condition {c.name!r}", backend_of(config, c), {**config.trainer, **c.trainer}, c.augment)
        for c in config.conditions]
    for where, backend, trainer, augment in tables:
        try:
            with warnings.catch_warnings():   # those of the settings (e.g. a large δ) come when they are used
                warnings.simplefilter("ignore")
                if augment:
                    AugmentSettings.from_table(augment)
                check_settings(backend, {k: v for k, v in trainer.items() if k != "keep_runs"}, augment)
        except PyitaError as exc:
            raise InputError(f"{where}: {exc}", path) from None
