"""ASE calculator for a trained PyITA potential: relax structures, run MD or screen many structures with it.

Energy, per-atom energies (the potential's own decomposition E = Σ_i E_i, so they sum to the energy), forces and,
for periodic cells, stress: the stress is (1/V) ∂E/∂ε, the derivative with respect to a homogeneous strain of
positions and cell together (ASE's sign convention and Voigt order). What the potential cannot evaluate (a cell
periodic in some directions only, an element it has no network for) is ASE's ``CalculatorSetupError``, which
ASE code (and its optimisers' callers) expect from a calculator.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np
from ase.calculators.calculator import (Calculator, CalculatorSetupError, PropertyNotImplementedError,
                                        all_changes)

from pyita.descriptors import make_batch
from pyita.errors import whole_number
from pyita.model import Potential, load_potential, resolve_device
from pyita.structure import Structure


class PyitaCalculator(Calculator):
    """``PyitaCalculator("model.pt")`` (or a folder of aenet ``.nn`` files, or a ``Potential``); ``device``
    defaults to CUDA if present. ``calculate_many`` evaluates a list of Atoms in batches."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model: str | Path | Potential, device=None, **kwargs):
        super().__init__(**kwargs)
        keep = device is None and isinstance(model, Potential)
        self.potential = load_potential(model, None if keep else resolve_device(device))
        self.potential.eval()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        structure = self._structure(self.atoms)
        if "stress" in properties and structure.cell is None:
            raise PropertyNotImplementedError("stress needs a periodic cell")
        # a periodic cell's stress comes with the energy (it costs little more), as MD with a barostat asks for both
        self.results.update(self._evaluate([self.atoms], [structure], stress=structure.cell is not None)[0])

    def calculate_many(self, atoms_list: Sequence, properties=("energy", "forces"), batch_size: int = 32) -> list[dict]:
        """The results (``energy``, ``free_energy``, ``energies``, ``forces``, and ``stress`` if asked) of every
        Atoms in ``atoms_list``, ``batch_size`` structures at a time: the numbers ``calculate`` gives one by one,
        in far fewer calls (for screening). The Atoms themselves are left as they are."""
        whole_number(batch_size, "batch size", 1)
        structures = [self._structure(atoms) for atoms in atoms_list]   # all refused or none, before any work
        stress = "stress" in properties
        if stress and any(s.cell is None for s in structures):
            raise PropertyNotImplementedError("stress needs a periodic cell")
        results: list[dict] = []
        for start in range(0, len(atoms_list), batch_size):
            chunk = slice(start, start + batch_size)
            results += self._evaluate(atoms_list[chunk], structures[chunk], stress)
        return results

    def _evaluate(self, atoms_list: Sequence, structures: list[Structure], stress: bool) -> list[dict]:
        """The results of each of these Atoms (as ``structures``), evaluated as one batch."""
        batch = make_batch(structures, self.potential.species, self.potential.descriptor.cutoff,
                           device=self.potential.device)
        evaluation = self.potential.evaluate(batch, forces=True, strain=stress)
        bounds = np.cumsum([0] + [len(s) for s in structures])
        forces = evaluation.forces.detach().cpu().numpy()
        atomic = evaluation.atomic.cpu().numpy()
        out = []
        for k, (atoms, first, last) in enumerate(zip(atoms_list, bounds[:-1], bounds[1:])):
            energy = float(evaluation.energies[k])
            result = {"energy": energy, "free_energy": energy, "energies": atomic[first:last].copy(),
                      "forces": forces[first:last].copy()}
            if stress:
                w = evaluation.d_strain[k].detach().cpu().numpy()
                w = 0.5 * (w + w.T) / atoms.get_volume()
                result["stress"] = np.array([w[0, 0], w[1, 1], w[2, 2], w[1, 2], w[0, 2], w[0, 1]])
            out.append(result)
        return out

    def _structure(self, atoms) -> Structure:
        """The Atoms as PyITA's structure, or ASE's ``CalculatorSetupError`` saying why the potential cannot
        evaluate it."""
        pbc = np.asarray(atoms.pbc)
        if pbc.any() and not pbc.all():
            raise CalculatorSetupError(
                f"PyitaCalculator: pbc={pbc.tolist()} (periodic in some directions only) is not supported: the "
                "descriptor, as aenet's, takes a cell as periodic in all directions or none; for a slab, make it "
                "periodic with vacuum in the third direction (pbc=True)")
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(self.potential.species))
        if unknown:
            raise CalculatorSetupError(f"PyitaCalculator: element(s) {', '.join(unknown)} not covered by the model, "
                                       f"which knows {', '.join(self.potential.species)}")
        return Structure(symbols, atoms.get_positions(), np.array(atoms.cell[:]) if pbc.all() else None)
