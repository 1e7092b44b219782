"""Small labelled data sets for the trainer tests: ASE's EMT gives exact energies and forces in milliseconds."""

from __future__ import annotations

import numpy as np
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from pyita.structure import Structure

#: A descriptor small enough for fast tests (features: 2 species × (5 + 3 + 2) = 20).
SMALL_DESCRIPTOR = {"radial_rc": 4.5, "radial_n": 5, "angular_rc": 4.0, "angular_n": 3}


def emt_structures(n: int, seed: int = 0, atoms_per_cell: int = 4) -> list[Structure]:
    """Rattled, strained fcc Cu cells with one Au atom: two species, periodic, exact EMT labels."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        if atoms_per_cell > 4:
            atoms = atoms.repeat((2, 1, 1))
        atoms[int(rng.integers(len(atoms)))].symbol = "Au"
        atoms.set_cell(atoms.cell[:] * (1 + 0.01 * rng.standard_normal()), scale_atoms=True)
        atoms.rattle(0.08, seed=int(rng.integers(2**31)))
        atoms.positions[0] += atoms.cell[1] * 2  # an atom outside the cell, as derived structures often are
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(Structure.from_ase(atoms, source=f"emt-{seed}-{k}"))
    return out


def emt_molecule() -> Structure:
    """An isolated (non-periodic) structure."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.02, seed=1)
    atoms.calc = EMT()
    atoms.get_forces()
    return Structure.from_ase(atoms, source="ethanol")
