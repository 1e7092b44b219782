"""Batches of structures with their neighbour pairs, ready for a descriptor.

The pair search runs in vesin (compiled) on positions wrapped into the cell; the integer image shifts are
then corrected by the wrapping offsets, so that a pair vector is always computed from the *original*
positions, ``r_ij = positions[j] - positions[i] + pair_shift``. That keeps gradients flowing to the
positions the user passed and makes the features independent of which periodic image an atom was
written at. Each unordered pair is listed once (a half list): descriptors add a pair's contribution to
both of its atoms, which halves the work of the largest part of featurization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from collections.abc import Sequence

import numpy as np
import torch
import vesin

from pyita.errors import InputError
from pyita.geometry import (NEAR_DISTANCE, CloseAtomsWarning, first_report, neighbor_search_problem,
                            warn_close_atoms)
from pyita.structure import Structure


@dataclass
class AtomsBatch:
    """Many structures concatenated; all tensors on one device.

    ``pair_i``/``pair_j`` hold every unordered pair of atoms (including an atom and its own periodic
    images) closer than ``cutoff``, each once, as global atom indices; ``pair_shift`` is the Cartesian
    image offset so that ``r_ij = positions[j] - positions[i] + pair_shift``. ``species`` is the list
    ``species_index`` points into.
    """

    positions: torch.Tensor
    species_index: torch.Tensor
    structure_index: torch.Tensor
    n_atoms: torch.Tensor
    pair_i: torch.Tensor
    pair_j: torch.Tensor
    pair_shift: torch.Tensor
    cutoff: float = math.inf
    species: tuple[str, ...] = ()

    def to(self, device) -> AtomsBatch:
        tensors = ("positions", "species_index", "structure_index", "n_atoms", "pair_i", "pair_j", "pair_shift")
        return replace(self, **{name: getattr(self, name).to(device) for name in tensors})

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])


def _species_indices(structure: Structure, lookup: dict[str, int]) -> np.ndarray:
    unknown = sorted(set(structure.symbols) - lookup.keys())
    if unknown:
        raise InputError(
            f"species {', '.join(unknown)} not in the descriptor's species {', '.join(lookup)}", structure.source)
    return np.fromiter((lookup[s] for s in structure.symbols), dtype=np.int64, count=len(structure))


def _name(structure: Structure, index: int) -> str:
    """How messages name a structure: its file, the file of its parent, or its place in the batch."""
    if structure.source:
        return structure.source
    parent = structure.info.get("parent_source")
    return f"a derived structure of {parent}" if parent else f"structure {index + 1} of the batch"


def _pairs(structure: Structure, search: vesin.NeighborList, index: int,
           close: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half pair list of one structure with Cartesian shifts relative to its original positions.

    Coincident atoms are an error (the descriptor would be NaN); atoms closer than NEAR_DISTANCE are
    added to ``close`` (originals not reported before only: a derived copy repeats its parent's problem).
    """
    positions, cell = structure.positions, structure.cell
    if cell is not None:
        volume = abs(np.linalg.det(cell))
        if not np.isfinite(volume) or volume < 1e-6 * max(np.linalg.norm(cell, axis=1).prod(), 1e-300):
            raise InputError("the cell is singular (lattice vectors are linearly dependent)",
                             _name(structure, index))
    problem = neighbor_search_problem(positions, cell, search.cutoff)
    if problem is not None:
        raise InputError(problem, _name(structure, index))
    if cell is None:
        i, j, distance = search.compute(positions, np.zeros((3, 3)), False, "ijd")
        i, j = i.astype(np.int64), j.astype(np.int64)
        shift = np.zeros((len(i), 3))
    else:
        offset = np.floor(positions @ np.linalg.inv(cell))
        wrapped = positions - offset @ cell
        i, j, image, distance = search.compute(wrapped, cell, True, "ijSd")
        i, j = i.astype(np.int64), j.astype(np.int64)
        shift = (image + offset[i] - offset[j]) @ cell
    if len(distance):
        k = int(np.argmin(distance))
        if distance[k] < NEAR_DISTANCE:
            found = CloseAtomsWarning(_name(structure, index), int(i[k]), int(j[k]), float(distance[k]))
            found.refuse_coincident()
            if not structure.is_derived and first_report(structure):
                close.append(found)
    return i, j, shift


def make_batch(
    structures: Sequence[Structure], species: Sequence[str], cutoff: float, device=None,
    close: list | None = None,
) -> AtomsBatch:
    """Concatenate ``structures`` and find all pairs closer than ``cutoff`` (Å).

    Atoms closer than NEAR_DISTANCE are warned about, in one warning for the batch, or collected in
    ``close`` for a caller that makes many batches and warns once (see ``featurize``).
    """
    species = tuple(species)
    lookup = {s: k for k, s in enumerate(species)}
    search = vesin.NeighborList(cutoff=float(cutoff), full_list=False)
    reports = [] if close is None else close
    positions, kinds, owners, counts = [], [], [], []
    pair_i, pair_j, shifts = [], [], []
    start = 0
    for index, structure in enumerate(structures):
        kinds.append(_species_indices(structure, lookup))
        i, j, shift = _pairs(structure, search, index, reports)
        positions.append(structure.positions)
        owners.append(np.full(len(structure), index, dtype=np.int64))
        counts.append(len(structure))
        pair_i.append(i + start)
        pair_j.append(j + start)
        shifts.append(shift)
        start += len(structure)

    if close is None:
        warn_close_atoms(reports)

    def cat(parts, dtype, shape):
        array = np.concatenate(parts) if parts else np.zeros(shape)
        return torch.as_tensor(array, dtype=dtype, device=device)

    return AtomsBatch(
        positions=cat(positions, torch.float64, (0, 3)),
        species_index=cat(kinds, torch.long, (0,)),
        structure_index=cat(owners, torch.long, (0,)),
        n_atoms=torch.as_tensor(counts, dtype=torch.long, device=device),
        pair_i=cat(pair_i, torch.long, (0,)),
        pair_j=cat(pair_j, torch.long, (0,)),
        pair_shift=cat(shifts, torch.float64, (0, 3)),
        cutoff=float(cutoff),
        species=species,
    )
