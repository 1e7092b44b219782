"""The model's errors on the states its own dynamics visits: every ``reference_every``-th frame of each
trajectory, exactly as written to the trajectory file, relabelled by a reference calculator (resumable: each
result goes to a checkpoint as it finishes)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pyita.check.calculators import CalculatorSpec, compute, fold_for
from pyita.check.label import Checkpoint, CheckpointFolder, fingerprint
from pyita.metrics import per_atom_energy_errors, summarize
from pyita.progress import progress_bar
from pyita.structure import Structure

REFERENCE_FILE = "reference.jsonl"
#: reference.csv, one row per relabelled frame.
REFERENCE_COLUMNS = ("run", "frame", "step", "time_fs", "energy_model_eV", "energy_reference_eV",
                     "energy_error_meV_per_atom", "force_mae_eV_per_A", "force_max_error_eV_per_A")


def read_frames(path: Path) -> list[Structure]:
    """A trajectory file's frames with the model's energy and forces as labels."""
    import ase.io

    return [Structure.from_ase(atoms) for atoms in ase.io.read(path, ":", format="extxyz")]


def frame_errors(frame: Structure, energy: float, forces: np.ndarray) -> dict:
    """The model's errors on one frame (its labels) against the reference's ``energy`` and ``forces``."""
    difference = np.abs(frame.forces - forces)
    return {"energy_model_eV": frame.energy, "energy_reference_eV": energy,
            "energy_error_meV_per_atom": float(per_atom_energy_errors(frame.energy, energy, len(frame))),
            "force_mae_eV_per_A": float(difference.mean()), "force_max_error_eV_per_A": float(difference.max())}


def relabel(trajectories: dict[str, Path], every: int, spec: CalculatorSpec, folder: CheckpointFolder,
            progress: bool = True) -> tuple[list[dict], dict[str, dict]]:
    """(rows of reference.csv, per run its error summary) over frames 0, ``every``, 2 × ``every``, … of each
    trajectory. A frame the calculator fails on is left out and counted (``reference_failed``), with a
    warning; the others go on."""
    chosen = []
    for name, path in trajectories.items():
        frames = read_frames(path)
        chosen += [(name, k, frames[k]) for k in range(0, len(frames), every)]
    structures = [frame for _, _, frame in chosen]
    meta = {"kind": "md-reference", "calculator": spec.describe(), "count": len(structures),
            "fingerprint": fingerprint(structures)}
    checkpoint = Checkpoint(folder.path / REFERENCE_FILE, meta, folder=folder)
    failed: dict[str, list[str]] = {}
    todo = [k for k in range(len(chosen)) if k not in checkpoint]
    if todo:
        calc = spec.make()
        with progress_bar(len(todo), "md: reference", "frames", enabled=progress) as advance:
            for k in todo:
                name, index, frame = chosen[k]
                try:
                    energy, forces = compute(calc, frame, True, fold_for(frame, spec.fold))
                except Exception as exc:  # noqa: BLE001 - a broken frame is a finding, not the end of the study
                    failed.setdefault(name, []).append(f"frame {index}: {type(exc).__name__}: {exc}")
                else:
                    checkpoint.append(k, energy, forces)
                advance(1)
        checkpoint.close()
    rows = []
    for k, (name, index, frame) in enumerate(chosen):
        if k in checkpoint:
            energy, forces = checkpoint.results[k]
            rows.append({"run": name, "frame": index, "step": int(frame.info["step"]),
                         "time_fs": float(frame.info["time_fs"]),
                         **frame_errors(frame, energy, np.asarray(forces, dtype=np.float64))})
    for name, problems in failed.items():
        warnings.warn(f"{name}: the reference calculator failed on {len(problems)} frame(s), left out of the "
                      f"errors; first: {problems[0]}", stacklevel=2)
    return rows, {name: run_errors([r for r in rows if r["run"] == name], len(failed.get(name, [])))
                  for name in trajectories}


def run_errors(rows: list[dict], failed: int) -> dict:
    """One run's trajectory errors: energy (meV/atom) and force (eV/Å) summaries over its relabelled frames,
    and the errors at its first and last relabelled frame (how they grew)."""
    forces = [r["force_mae_eV_per_A"] for r in rows]
    return {"frames": len(rows), "reference_failed": failed,
            "energy_mae_meV_per_atom": summarize([r["energy_error_meV_per_atom"] for r in rows])["mae"],
            "force_mae_eV_per_A": float(np.mean(forces)) if rows else None,
            "first": {k: rows[0][k] for k in ("step", "energy_error_meV_per_atom", "force_mae_eV_per_A")}
            if rows else None,
            "last": {k: rows[-1][k] for k in ("step", "energy_error_meV_per_atom", "force_mae_eV_per_A")}
            if rows else None}
