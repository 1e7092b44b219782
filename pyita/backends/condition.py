"""What every backend returns for one trained condition: its own module, so that the backends import it
without importing the package that chooses among them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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
