"""Prediction with a trained potential, and its error tables against reference labels where they exist
(``pyita.metrics.error_tables``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita import __version__
from pyita.descriptors import make_batch
from pyita.errors import whole_number
from pyita.geometry import warn_close_atoms
from pyita.io.atomic import atomic_output_dir
from pyita.io.tables import write_csv
from pyita.io.outputs import data_inputs, guard_output
from pyita.io.records import json_text
from pyita.metrics import ENERGY_COLUMNS, FORCE_COLUMNS, error_tables
from pyita.model import Potential, load_potential, resolve_device
from pyita.progress import progress_bar
from pyita.structure import ASE_ENERGY, ASE_FORCES, REF_ENERGY, REF_FORCES, LabelKeys, Structure, geometry_key


#: predictions.csv: the error table's columns and where the model met the structure ("training",
#: "validation", or empty when unseen or unknown)
PREDICTION_COLUMNS = (*ENERGY_COLUMNS, "seen_in")

#: predictions.extxyz holds the predictions under this prefix (``PYITA_energy``, ``PYITA_forces``) and the
#: reference labels under MACE's ``REF_energy``/``REF_forces``, so that neither is taken for the other.
PREDICTION_PREFIX = "PYITA_"


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


def seen_in(potential: Potential, structures: Sequence[Structure]) -> list[str] | None:
    """Per structure, the part of the model's own data it is in ("training", "validation" or ""): errors there
    are not test errors. None for a model that records no fingerprints (aenet's, or one trained before they
    were recorded)."""
    recorded = potential.metadata.get("fingerprints")
    if not isinstance(recorded, dict):
        return None
    where = {key: part for part in ("validation", "training") for key in recorded.get(part, [])}
    return [where.get(geometry_key(s), "") for s in structures]


def _prediction_frame(structure: Structure, prediction: Prediction, row: dict):
    """One frame of predictions.extxyz: the prediction under ``PREDICTION_PREFIX``, the reference (a total energy
    in eV, as in predictions.csv) under ``REF_ENERGY``/``REF_FORCES`` where the structure has one."""
    atoms = Structure(structure.symbols, structure.positions, structure.cell).to_ase()
    atoms.info.update({"source": row["source"], "derived": row["derived"],
                       f"{PREDICTION_PREFIX}{ASE_ENERGY}": prediction.energy})
    if row.get("seen_in"):
        atoms.info["seen_in"] = row["seen_in"]
    if prediction.forces is not None:
        atoms.arrays[f"{PREDICTION_PREFIX}{ASE_FORCES}"] = prediction.forces.copy()
    if row["energy_ref_eV"] != "":
        atoms.info.update({REF_ENERGY: row["energy_ref_eV"], "error_meV_per_atom": row["error_meV_per_atom"]})
    if structure.forces is not None and not structure.is_derived:
        atoms.arrays[REF_FORCES] = structure.forces.copy()
    return atoms


def run_predict(model: str | Path, data: Sequence[str], out: str | Path, forces: bool = True,
                batch_size: int = 32, device=None, overwrite: bool = False, progress: bool = True,
                keys: LabelKeys | None = None) -> dict:
    """``pyita predict``: read every data argument, predict, and write under ``out`` (all or nothing)
    predictions.csv, forces.csv, predictions.extxyz and summary.json; returns the summary."""
    import ase.io

    from pyita.io import open_source

    whole_number(batch_size, "batch size", 1)   # settings first: nothing read or written in vain
    resolve_device(device)
    sources = [open_source(spec, require_labels=False, keys=keys) for spec in data]
    inputs = [model] + [path for spec, source in zip(data, sources) for path in data_inputs(spec, source)]
    guard_output(out, inputs, "predict", overwrite)
    potential = load_potential(model, resolve_device(device))
    structures = [s for source in sources for s in source]
    predictions = predict(potential, structures, batch_size=batch_size, forces=forces, progress=progress)
    structure_rows, force_rows, summary = error_tables(structures, [p.energy for p in predictions],
                                                       [p.forces for p in predictions], potential.reference_energies())
    seen = seen_in(potential, structures)
    if seen is not None:
        for row, part in zip(structure_rows, seen):
            row["seen_in"] = part
        summary["seen_in_model_data"] = {part: seen.count(part) for part in ("training", "validation")}
        unseen = [k for k, part in enumerate(seen) if not part]
        if len(unseen) < len(structures):   # the errors a reader can take for test errors
            summary["unseen"] = error_tables([structures[k] for k in unseen], [predictions[k].energy for k in unseen],
                                             [predictions[k].forces for k in unseen],
                                             potential.reference_energies())[2]
    summary.update({"pyita_version": __version__, "command": "predict", "model": str(model), "data": list(data),
                    "model_settings": potential.metadata.get("settings", {}),
                    "model_seed": potential.metadata.get("seed")})
    with atomic_output_dir(out, overwrite=overwrite, command="predict") as tmp:
        write_csv(tmp / "predictions.csv", structure_rows, PREDICTION_COLUMNS if seen is not None else ENERGY_COLUMNS)
        if forces:
            write_csv(tmp / "forces.csv", force_rows, FORCE_COLUMNS)
        frames = [_prediction_frame(s, p, row) for s, p, row in zip(structures, predictions, structure_rows)]
        ase.io.write(tmp / "predictions.extxyz", frames, format="extxyz")
        (tmp / "summary.json").write_text(json_text(summary, indent=2))
    return summary
