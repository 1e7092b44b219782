"""Error measures and the one error-table format every command writes (`pyita predict`, `pyita train`'s test
errors, `pyita aenet run`): per-atom energy errors (E_pred − E_ref)/N in meV/atom per structure, force errors
per Cartesian component in eV/Å. Derived (Taylor) structures are listed but kept out of the summary: their
energies are approximations and they have no force labels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pyita.reference import total_energy
from pyita.structure import Structure

#: The columns of the per-structure energy table, in their order.
ENERGY_COLUMNS = ("structure", "source", "n_atoms", "derived", "energy_pred_eV", "energy_pred_eV_per_atom",
                  "energy_ref_eV", "energy_ref_eV_per_atom", "error_meV_per_atom")
#: The columns of the per-atom force table (signed errors, predicted − reference), in their order.
FORCE_COLUMNS = ("structure", "atom", "symbol", "x", "y", "z", "fx_pred", "fy_pred", "fz_pred",
                 "fx_ref", "fx_error", "fy_ref", "fy_error", "fz_ref", "fz_error")


def _numpy(x) -> np.ndarray:
    """``x`` as float64, also when it is a torch tensor (on any device), without importing torch here."""
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)


def per_atom_energy_errors(predicted, reference, n_atoms) -> np.ndarray:
    """Signed (E_pred − E_ref)/N in meV/atom."""
    predicted, reference, n_atoms = map(_numpy, (predicted, reference, n_atoms))
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


def error_tables(structures: Sequence[Structure], energies: Sequence[float],
                 forces: Sequence[np.ndarray | None], references: dict[str, float],
                 sources: Sequence[str] | None = None) -> tuple[list[dict], list[dict], dict]:
    """(per-structure energy rows, per-atom force rows, summary) of predicted total ``energies`` (eV) and
    ``forces`` (eV/Å, None where not predicted) against the structures' labels. ``references`` are the atomic
    energies that turn a cohesive label into a total one; ``sources`` name the structures (default: their
    own ``source``). Columns: ``ENERGY_COLUMNS``, ``FORCE_COLUMNS``; cells without a label are empty."""
    structure_rows, force_rows = [], []
    energy_errors, force_errors = [], []
    for k, (s, energy, predicted) in enumerate(zip(structures, energies, forces)):
        n = len(s)
        row = {"structure": k + 1, "source": sources[k] if sources is not None else s.source or "", "n_atoms": n,
               "derived": s.is_derived, "energy_pred_eV": energy, "energy_pred_eV_per_atom": energy / n,
               "energy_ref_eV": "", "energy_ref_eV_per_atom": "", "error_meV_per_atom": ""}
        if s.energy is not None:
            ref = total_energy(s, references)
            error = (energy - ref) / n * 1000.0
            row.update(energy_ref_eV=ref, energy_ref_eV_per_atom=ref / n, error_meV_per_atom=error)
            if not s.is_derived:
                energy_errors.append(error)
        structure_rows.append(row)
        if predicted is None:
            continue
        labelled = s.forces is not None and not s.is_derived
        for a in range(n):
            frow = {"structure": k + 1, "atom": a + 1, "symbol": s.symbols[a],
                    **{c: s.positions[a, i] for i, c in enumerate("xyz")},
                    **{f"f{c}_pred": predicted[a, i] for i, c in enumerate("xyz")}}
            for i, c in enumerate("xyz"):
                frow[f"f{c}_ref"] = s.forces[a, i] if labelled else ""
                frow[f"f{c}_error"] = predicted[a, i] - s.forces[a, i] if labelled else ""
            force_rows.append(frow)
        if labelled:
            force_errors.append((predicted - s.forces).ravel())
    summary = {
        "energy_meV_per_atom": summarize(energy_errors),
        "force_components_eV_per_A": summarize(np.concatenate(force_errors) if force_errors else []),
        "structures": len(structures),
        "derived_excluded_from_summary": sum(s.is_derived for s in structures),
    }
    return structure_rows, force_rows, summary
