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
    """The one summary of a set of errors (any unit), taken as absolute values: count, MAE, RMSE, median,
    quartiles and IQR, 95th percentile, minimum and maximum (NaN for an empty set)."""
    e = np.abs(np.asarray(errors, dtype=np.float64).ravel())
    if e.size == 0:
        return {"n": 0, **{k: float("nan") for k in ("mae", "rmse", "median", "q1", "q3", "iqr", "p95", "min",
                                                      "max")}}
    q1, median, q3, p95 = np.percentile(e, [25, 50, 75, 95])
    return {"n": int(e.size), "mae": float(e.mean()), "rmse": float(np.sqrt(np.mean(e * e))),
            "median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1), "p95": float(p95),
            "min": float(e.min()), "max": float(e.max())}
