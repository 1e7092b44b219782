"""ASE calculator for a trained PyITA potential: relax structures or run MD with it.

Energy, forces and, for periodic cells, stress: the stress is (1/V) ∂E/∂ε, the derivative with respect
to a homogeneous strain of positions and cell together (ASE's sign convention and Voigt order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from pyita.descriptors import make_batch
from pyita.errors import InputError
from pyita.model import Potential, load_potential, resolve_device
from pyita.structure import Structure


class PyitaCalculator(Calculator):
    """``PyitaCalculator("model.pt")`` or ``PyitaCalculator(potential)``; ``device`` defaults to CUDA if present."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: str | Path | Potential, device=None, **kwargs):
        super().__init__(**kwargs)
        keep = device is None and isinstance(model, Potential)
        self.potential = load_potential(model, None if keep else resolve_device(device))
        self.potential.eval()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        pbc = np.asarray(self.atoms.pbc)
        if pbc.any() and not pbc.all():
            raise InputError("partially periodic cells are not supported (periodic in all or no directions)")
        periodic = bool(pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a periodic cell")
        structure = Structure(self.atoms.get_chemical_symbols(), self.atoms.get_positions(),
                              np.array(self.atoms.cell[:]) if periodic else None)
        self.potential.check_species([structure])
        batch = make_batch([structure], self.potential.species, self.potential.descriptor.cutoff,
                           device=self.potential.device)
        energy, forces, d_strain = self.potential.energy_and_derivatives(batch, forces=True, strain=periodic)
        self.results["energy"] = self.results["free_energy"] = float(energy[0])
        self.results["forces"] = forces.detach().cpu().numpy()
        if periodic:
            w = d_strain[0].detach().cpu().numpy()
            w = 0.5 * (w + w.T) / self.atoms.get_volume()
            self.results["stress"] = np.array([w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1]])
