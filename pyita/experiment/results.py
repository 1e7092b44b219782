"""The saved result of one (trial, condition) task: where it lives, saving it, and reading it back — checked.

A finished task travels to the process that started the experiment (from a local worker or a Dask worker
alike), which writes ``results/trial-NNN/<condition>.npz`` (the errors) and then ``<condition>.json`` (its
summary), each atomically; the JSON marks completion. A file damaged anyway (a full disk, a copy cut short)
is caught on reading, so ``--resume`` redoes that task instead of building a report on it.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyita.errors import PyitaError
from pyita.io.atomic import atomic_write, atomic_write_text
from pyita.io.records import json_text

RESULTS = "results"
#: The aenet run folders kept with ``keep_runs = true``, one per task, beside ``results/``.
KEPT_RUNS = "aenet-runs"
#: The aenet backend's temporary run folders otherwise: removed after each run, and cleared when the experiment
#: (re)starts, so a killed run leaves nothing behind outside its experiment folder.
SCRATCH = ".aenet-scratch"
SUMMARY_KEYS = ("trial", "condition", "seed", "n_test", "seconds", "history")
ARRAYS = ("energy_ref", "energy_pred", "n_atoms", "force_errors")
#: Arrays a task saves only when it ran MD (``pyita.experiment.md``): time to failure and stable, per run.
OPTIONAL_ARRAYS = ("md_time_to_failure_fs", "md_stable")


class DamagedResult(PyitaError):
    """A task result that cannot be trusted; the message says which file and why."""


def slug(name: str) -> str:
    """A file-name form of a condition name, distinct for distinct names ("absolute δ=0.01 it=15" →
    "absolute_d=0.01_it=15")."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name.replace("δ", "d")).strip("_") or "condition"


def refuse_shared_file_names(names: list[str]) -> None:
    """Refuse condition names whose result files would be one and the same (an empty name, names that differ
    only in spaces, punctuation, letter case or non-ASCII letters): their results would overwrite each other."""
    taken: dict[str, str] = {}
    for name in names:
        if not name.strip():
            raise PyitaError(f"condition name {name!r} is empty; give every [[condition]] a name")
        key = slug(name).casefold()   # case-insensitive file systems (macOS, Windows) fold letter case
        if key in taken:
            raise PyitaError(f"conditions {taken[key]!r} and {name!r} would share the result file name "
                             f"{slug(name)!r} (names are stored as letters, digits and . = - _ only); rename one")
        taken[key] = name


def result_paths(out: Path, trial: int, condition: str) -> tuple[Path, Path]:
    folder = Path(out) / RESULTS / f"trial-{trial:03d}"
    name = slug(condition)
    return folder / f"{name}.json", folder / f"{name}.npz"


def _undefined_as_nan(summary: dict) -> None:
    """The numbers JSON wrote as null (undefined: NaN) back as NaN, as the analysis computes with them."""
    for key in ("train_energy_mae", "train_energy_rmse"):
        if key in summary and summary[key] is None:
            summary[key] = math.nan
    if isinstance(summary["history"], list):
        summary["history"] = [{k: math.nan if v is None else v for k, v in row.items()} if isinstance(row, dict)
                              else row for row in summary["history"]]


def kept_run_folder(out: Path, trial: int, condition: str) -> Path:
    """Where the aenet backend keeps a task's run folder when the trainer says ``keep_runs = true``."""
    return Path(out) / KEPT_RUNS / f"trial-{trial:03d}" / slug(condition)


@dataclass
class FinishedTask:
    """One task's result as it comes back from the worker that ran it, before it is saved: its summary, its
    arrays (``ARRAYS``), the aenet run folder it kept (absolute, or None), the warnings it raised (message and
    category, to be shown where the experiment runs) and its wall time in the worker."""

    summary: dict
    arrays: dict[str, np.ndarray]
    run_folder: str | None = None
    warnings: list[tuple[str, type[Warning]]] = field(default_factory=list)
    seconds_in_task: float = 0.0

    @property
    def trial(self) -> int:
        return self.summary["trial"]

    @property
    def condition(self) -> str:
        return self.summary["condition"]

    def save(self, out: Path) -> dict:
        """Write the task's files under ``out`` (arrays, then the summary that marks completion); the one way
        results are saved, whichever kind of worker ran the task. Returns the summary as saved."""
        json_path, npz_path = result_paths(out, self.trial, self.condition)
        summary = dict(self.summary)
        if self.run_folder:   # as seen from the result's own folder
            summary["aenet_run"] = os.path.relpath(self.run_folder, json_path.parent.absolute())
        json_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(npz_path, lambda tmp: np.savez_compressed(
            tmp, **{key: self.arrays[key] for key in (*ARRAYS, *OPTIONAL_ARRAYS) if key in self.arrays}))
        atomic_write_text(json_path, json_text(summary, indent=1))
        return summary


@dataclass
class TaskResult:
    summary: dict
    energy_errors: np.ndarray   # signed per-structure per-atom error, meV/atom
    force_errors: np.ndarray    # absolute per-component error, eV/Å
    n_atoms: np.ndarray
    #: per-run MD arrays (``OPTIONAL_ARRAYS``), when the task ran MD
    md: dict[str, np.ndarray] = field(default_factory=dict)

    def structure_errors(self, kind: str) -> np.ndarray:
        """One number per test structure: |energy error|, or the mean |force component error| (the unit
        that is paired across conditions; force components within a structure are not independent)."""
        if kind == "energy":
            return np.abs(self.energy_errors)
        if self.force_errors.size != 3 * int(self.n_atoms.sum()):
            return np.array([])
        bounds = np.cumsum(3 * self.n_atoms)[:-1]
        return np.array([part.mean() for part in np.split(self.force_errors, bounds)])

    @classmethod
    def load(cls, json_path: Path, npz_path: Path, trial: int | None = None,
             condition: str | None = None) -> TaskResult:
        """Read and check one task's files; DamagedResult says what is wrong with them."""
        try:
            summary = json.loads(Path(json_path).read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DamagedResult(f"{json_path}: unreadable ({type(exc).__name__}: {exc})") from None
        if not isinstance(summary, dict) or any(key not in summary for key in SUMMARY_KEYS):
            raise DamagedResult(f"{json_path}: incomplete summary (needs {', '.join(SUMMARY_KEYS)})")
        if (trial is not None and summary["trial"] != trial) or \
                (condition is not None and summary["condition"] != condition):
            raise DamagedResult(f"{json_path}: belongs to trial {summary['trial']} / {summary['condition']!r}")
        _undefined_as_nan(summary)
        try:
            with np.load(npz_path) as data:
                arrays = {key: np.asarray(data[key]) for key in ARRAYS}
                md = {key: np.asarray(data[key]) for key in OPTIONAL_ARRAYS if key in data.files}
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DamagedResult(f"{npz_path}: unreadable ({type(exc).__name__}: {exc})") from None
        n = summary["n_test"]
        n_atoms = arrays["n_atoms"]
        if any(arrays[key].shape != (n,) for key in ("energy_ref", "energy_pred", "n_atoms")) or \
                arrays["force_errors"].size not in (0, 3 * int(n_atoms.sum())) or (n_atoms <= 0).any():
            raise DamagedResult(f"{npz_path}: arrays do not match the {n} test structures of {json_path.name}")
        energy = 1000.0 * (arrays["energy_pred"] - arrays["energy_ref"]) / n_atoms
        return cls(summary, energy, np.abs(arrays["force_errors"]), n_atoms, md)


def load_results(config, out: Path) -> dict[tuple[int, str], TaskResult]:
    """All finished tasks of ``config`` in ``out``, keyed by (trial, condition name); a damaged one is an
    error that says to rerun with ``--resume``."""
    found = {}
    for trial in range(config.trials):
        for condition in config.conditions:
            json_path, npz_path = result_paths(out, trial, condition.name)
            if json_path.exists():
                try:
                    found[(trial, condition.name)] = TaskResult.load(json_path, npz_path, trial, condition.name)
                except DamagedResult as exc:
                    raise DamagedResult(f"{exc}; rerun with --resume to redo that task") from None
    return found
