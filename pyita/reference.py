"""Atomic reference energies: the per-species offsets aenet subtracts (generate.in TYPES).

Fitted by least squares on composition when the user has none, so per-atom energies and MAXENERGY
filters mean "above the isolated atoms" rather than a raw DFT total.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pyita.errors import InputError
from pyita.structure import Structure


def composition_matrix(structures: Sequence[Structure], species: Sequence[str]) -> np.ndarray:
    """Counts of each species per structure, shape (n_structures, n_species)."""
    index = {s: k for k, s in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, structure in enumerate(structures):
        for symbol in structure.symbols:
            if symbol not in index:
                raise InputError(f"species {symbol} not in {list(species)}", structure.source)
            counts[row, index[symbol]] += 1
    return counts


def fit_reference_energies(structures: Sequence[Structure], species: Sequence[str]) -> dict[str, float]:
    """Least-squares E ≈ Σ_s n_s·e_s over the structures with total energies (cohesive ones are already
    referenced). With one composition the fit is underdetermined and the minimum-norm solution is used:
    only the sum per composition matters."""
    totals = [s for s in structures if s.energy_kind == "total"]
    if not totals:
        return {s: 0.0 for s in species}
    energies = np.array([s.energy for s in totals], dtype=float)
    solution, *_ = np.linalg.lstsq(composition_matrix(totals, species), energies, rcond=None)
    return {s: float(e) for s, e in zip(species, solution)}


def _reference_sum(structure: Structure, reference: dict[str, float]) -> float:
    try:
        return sum(reference[s] for s in structure.symbols)
    except KeyError as exc:
        raise InputError(f"no reference energy for species {exc.args[0]}", structure.source) from None


def total_energy(structure: Structure, reference: dict[str, float]) -> float:
    """The structure's energy as a total energy (cohesive energies get the atomic references added)."""
    if structure.energy_kind == "cohesive":
        return structure.energy + _reference_sum(structure, reference)
    return structure.energy


def cohesive_per_atom(structure: Structure, reference: dict[str, float]) -> float:
    """Per-atom energy above the atomic references, eV/atom (aenet's MAXENERGY quantity)."""
    if structure.energy_kind == "cohesive":
        return structure.energy / len(structure)
    return (structure.energy - _reference_sum(structure, reference)) / len(structure)


def max_energy_mask(structures: Sequence[Structure], reference: dict[str, float], max_energy: float):
    """aenet's MAXENERGY: keep structures whose per-atom energy above the references is ≤ max_energy."""
    return np.array([cohesive_per_atom(s, reference) <= max_energy for s in structures])
