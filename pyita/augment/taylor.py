"""The first-order Taylor label: E(R + D) ≈ E − Σ_i F_i · D_i."""

from __future__ import annotations

import numpy as np

from pyita.structure import Structure


def taylor_shift(forces, displacement, atom: int | None = None) -> float:
    """−F·D: the first-order energy change when the atoms move by ``displacement`` (forces are −∂E/∂R, so
    moving along F lowers E).

    ``displacement`` is N×3, or, with ``atom``, the 3-vector of that one atom (the others stay): then −F·D is
    one short sum, which augmentation computes once per derived structure. ``forces`` may be nested lists.
    """
    if atom is None:
        return float(-np.einsum("ij,ij->", forces, displacement))
    row = forces[atom]
    fx, fy, fz = row.tolist() if isinstance(row, np.ndarray) else row   # Python floats, as in the files
    vx, vy, vz = displacement
    return -(fx * vx + fy * vy + fz * vz)


def taylor_energy(energy: float, forces, displacement, atom: int | None = None) -> float:
    """Energy of the displaced structure to first order: E − F·D (see ``taylor_shift``)."""
    return energy + taylor_shift(forces, displacement, atom)


def displaced(parent: Structure, displacement, info: dict, comments: list[str],
              energy: float | None = None) -> Structure:
    """A derived structure: parent's cell, positions R + D, Taylor energy, no force labels.

    ``displacement`` is an N×3 array or a ``Move``; ``energy`` defaults to ``taylor_energy``.
    Positions are not wrapped back into the cell: aenet and every periodic descriptor accept atoms outside
    it, and keeping R + D literal makes the displacement readable from the file.
    """
    atom = getattr(displacement, "atom", None)
    if atom is not None:  # a single-atom Move: only that atom's row changes
        positions = parent.positions.copy()
        positions[atom] += displacement.vector
    else:
        displacement = getattr(displacement, "displacement", displacement)
        positions = parent.positions + displacement
    if energy is None:
        energy = taylor_energy(parent.energy, parent.forces, getattr(displacement, "displacement", displacement))
    return Structure(
        symbols=list(parent.symbols),
        positions=positions,
        cell=None if parent.cell is None else parent.cell.copy(),
        energy=energy,
        forces=None,
        energy_kind=parent.energy_kind,
        source=None,
        comments=comments,
        info=info,
    )
