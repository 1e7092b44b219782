"""Prediction with a trained potential, and error tables against reference labels where they exist.

Errors follow docs/method.md: per-atom energy errors (E_pred − E_ref)/N in meV/atom per structure, and
per-component force errors in eV/Å. Derived (Taylor) structures are listed but kept out of the summary:
their energies are approximations and they have no force labels.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pyita import __version__
from pyita.descriptors import make_batch
from pyita.errors import whole_number
from pyita.geometry import warn_close_atoms
from pyita.io.atomic import atomic_output_dir
from pyita.io.outputs import data_inputs, guard_output
from pyita.model import Potential, load_potential, resolve_device
from pyita.progress import progress_bar
from pyita.reference import total_energy
from pyita.structure import Structure
from pyita.train.metrics import summarize


@dataclass
class Prediction:
    energy: float
    forces: np.ndarray | None


def predict(model: str | Path | Potential, structures: Sequence[Structure], batch_size: int = 32,
            forces: bool = True, device=None, progress: bool = False) -> list[Prediction]:
    """Total energies (eV) and, if asked, forces (eV/Å) of each structure, in batches of ``batch_size``."""
    whole_number(batch_size, "batch size", 1)
    keep = device is None and isinstance(model, Potential)  # a Potential given as is stays where it is
    potential = load_potential(model, None if keep else resolve_device(device))
    potential.check_species(structures)
    results: list[Prediction] = []
    close: list = []   # near-coincident atoms, warned about once for all batches
    with progress_bar(len(structures), "predict", "structures", enabled=progress) as advance:
        for start in range(0, len(structures), batch_size):
            chunk = structures[start:start + batch_size]
            batch = make_batch(chunk, potential.species, potential.descriptor.cutoff, device=potential.device,
                               close=close)
            energies, force, _ = potential.energy_and_derivatives(batch, forces=forces)
            per_structure = (np.split(force.cpu().numpy(), np.cumsum([len(s) for s in chunk])[:-1])
                             if forces else [None] * len(chunk))
            results += [Prediction(float(e), f) for e, f in zip(energies.tolist(), per_structure)]
            advance(len(chunk))
    warn_close_atoms(close)
    return results


def error_tables(potential: Potential, structures: Sequence[Structure], predictions: Sequence[Prediction]):
    """(per-structure rows, per-atom force rows, summary) comparing predictions with reference labels."""
    references = potential.reference_energies()
    structure_rows, force_rows = [], []
    energy_errors, force_errors = [], []
    for k, (s, p) in enumerate(zip(structures, predictions)):
        n = len(s)
        row = {"structure": k + 1, "source": s.source or "", "n_atoms": n, "derived": s.is_derived,
               "energy_pred_eV": p.energy, "energy_pred_eV_per_atom": p.energy / n,
               "energy_ref_eV": "", "energy_ref_eV_per_atom": "", "error_meV_per_atom": ""}
        if s.energy is not None:
            ref = total_energy(s, references)
            error = (p.energy - ref) / n * 1000.0
            row.update(energy_ref_eV=ref, energy_ref_eV_per_atom=ref / n, error_meV_per_atom=error)
            if not s.is_derived:
                energy_errors.append(error)
        structure_rows.append(row)
        if p.forces is None:
            continue
        labelled = s.forces is not None and not s.is_derived
        for a in range(n):
            frow = {"structure": k + 1, "atom": a + 1, "symbol": s.symbols[a],
                    **{f"{c}": s.positions[a, i] for i, c in enumerate("xyz")},
                    **{f"f{c}_pred": p.forces[a, i] for i, c in enumerate("xyz")}}
            for i, c in enumerate("xyz"):
                frow[f"f{c}_ref"] = s.forces[a, i] if labelled else ""
                frow[f"f{c}_error"] = p.forces[a, i] - s.forces[a, i] if labelled else ""
            force_rows.append(frow)
        if labelled:
            force_errors.append((p.forces - s.forces).ravel())
    summary = {
        "energy_meV_per_atom": summarize(energy_errors),
        "force_components_eV_per_A": summarize(np.concatenate(force_errors) if force_errors else []),
        "structures": len(structures),
        "derived_excluded_from_summary": sum(s.is_derived for s in structures),
    }
    return structure_rows, force_rows, summary


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def predict_to_dir(model: str | Path, data: Sequence[str], out: str | Path, forces: bool = True,
                   batch_size: int = 32, device=None, overwrite: bool = False, progress: bool = True) -> dict:
    """``pyita predict``: read every data argument, predict, and write under ``out`` (all or nothing)
    predictions.csv, forces.csv, predictions.extxyz and summary.json; returns the summary."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from pyita.io import open_source

    whole_number(batch_size, "batch size", 1)   # settings first: nothing read or written in vain
    resolve_device(device)
    sources = [open_source(spec, require_labels=False) for spec in data]
    inputs = [model] + [path for spec, source in zip(data, sources) for path in data_inputs(spec, source)]
    guard_output(out, inputs, "predict", overwrite)
    potential = load_potential(model, resolve_device(device))
    structures = [s for source in sources for s in source]
    predictions = predict(potential, structures, batch_size=batch_size, forces=forces, progress=progress)
    structure_rows, force_rows, summary = error_tables(potential, structures, predictions)
    summary.update({"pyita_version": __version__, "command": "predict", "model": str(model), "data": list(data),
                    "model_settings": potential.metadata.get("settings", {}),
                    "model_seed": potential.metadata.get("seed")})
    with atomic_output_dir(out, overwrite=overwrite, command="predict") as tmp:
        _write_csv(tmp / "predictions.csv", structure_rows)
        if forces:
            _write_csv(tmp / "forces.csv", force_rows)
        frames = []
        for s, p, row in zip(structures, predictions, structure_rows):
            atoms = Structure(s.symbols, s.positions, s.cell).to_ase()
            atoms.calc = SinglePointCalculator(atoms, energy=p.energy, forces=p.forces)
            atoms.info.update({"source": row["source"], "derived": row["derived"]})
            if row["energy_ref_eV"] != "":
                atoms.info.update(energy_ref_eV=row["energy_ref_eV"], error_meV_per_atom=row["error_meV_per_atom"])
            if s.forces is not None and not s.is_derived:
                atoms.arrays["forces_ref"] = s.forces.copy()
            frames.append(atoms)
        ase.io.write(tmp / "predictions.extxyz", frames, format="extxyz")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
