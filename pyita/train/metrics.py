"""Error measures as docs/method.md defines them: per-atom energy errors (meV/atom), force components (eV/Å)."""

from __future__ import annotations

import numpy as np
import torch


def per_atom_energy_errors(predicted, reference, n_atoms) -> np.ndarray:
    """Signed (E_pred − E_ref)/N in meV/atom."""
    predicted, reference, n_atoms = (np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x,
                                                dtype=np.float64) for x in (predicted, reference, n_atoms))
    return (predicted - reference) / n_atoms * 1000.0


def summarize(errors) -> dict:
    """MAE, RMSE, median and maximum of absolute errors (NaN for an empty set), and the count."""
    e = np.abs(np.asarray(errors, dtype=np.float64).ravel())
    if e.size == 0:
        return {"n": 0, "mae": float("nan"), "rmse": float("nan"), "median": float("nan"), "max": float("nan")}
    return {"n": int(e.size), "mae": float(e.mean()), "rmse": float(np.sqrt(np.mean(e * e))),
            "median": float(np.median(e)), "max": float(e.max())}
