"""Trainers behind one call: ``get_backend(name)(parents=, derived=, test=, trainer=, augment=, seed=,
reference_energies=)`` returns a ``ConditionResult``: the raw test errors and the training history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from pyita.errors import PyitaError


@dataclass
class ConditionResult:
    """What every backend returns for one trained condition, in the same units and signs."""

    energy_ref: np.ndarray     # reference total energy of each test structure, eV
    energy_pred: np.ndarray    # predicted total energy, eV (aenet: as compared with the reference)
    n_atoms: np.ndarray        # atoms per test structure
    force_errors: np.ndarray   # signed F_pred − F_ref per Cartesian component, eV/Å, test structures in order
    history: list[dict]        # one row per epoch
    seconds: float             # wall time of training and prediction
    #: energy MAE and RMSE (meV/atom) over the training set the trainer fitted (parents and fixed derived
    #: structures), for the model returned, as the trainer reports it
    train_energy_mae: float = float("nan")
    train_energy_rmse: float = float("nan")
    potential: Any = None      # the trained model, where the backend has one in memory (embedded)
    rundir: str | None = None  # the kept run folder, where the backend writes one (aenet with keep_runs)

BACKENDS = ("embedded", "aenet")


def get_backend(name: str) -> Callable[..., dict]:
    if name == "embedded":
        from pyita.backends.embedded import train_and_evaluate

        return train_and_evaluate
    if name == "aenet":
        from pyita.backends.aenet import experiment_backend

        return experiment_backend
    raise PyitaError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def check_settings(name: str, trainer: dict, augment: dict | None = None) -> None:
    """Raise PyitaError for trainer settings (or augmentation) that backend ``name`` cannot use: the same
    translation its training call makes, without training."""
    if name == "embedded":
        from pyita.backends.embedded import train_settings

        train_settings(trainer, augment)
    else:
        get_backend(name)
        from pyita.backends.aenet.experiment import aenet_settings

        aenet_settings(trainer)
