"""One model call for many structures, and the geometry the failure criteria watch, read off the same
neighbour pairs the descriptor uses (so it costs no second search).

Geometry is per structure: the shortest distance of every species pair within the model's cutoff and every
atom's nearest-neighbour distance (∞ when nothing lies within the cutoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch

from pyita.descriptors import AtomsBatch, make_batch
from pyita.errors import InputError
from pyita.structure import Structure

#: Structures per neighbour search when scanning many (the shortest distances of a data set).
SCAN_CHUNK = 50
#: Atoms per model call in the dynamics: the cost per atom falls as a call's fixed costs are shared, up to some
#: 800 atoms, and rises again beyond about 1500, as the pair tensors outgrow the caches (benchmarks/bench_md.py;
#: TiO2 at the default 8 Å cutoff, 2 cores).
BATCH_ATOMS = 1024


def pair_names(species: Sequence[str]) -> list[str]:
    """``A_B`` for every unordered pair of species (each name sorted alphabetically), in code order."""
    species = list(species)
    return ["_".join(sorted((a, b))) for k, a in enumerate(species) for b in species[k:]]


def _pair_codes(n_species: int) -> np.ndarray:
    """code[a, b] = the pair's place in ``pair_names`` (symmetric)."""
    codes = np.zeros((n_species, n_species), dtype=np.int64)
    k = 0
    for a in range(n_species):
        for b in range(a, n_species):
            codes[a, b] = codes[b, a] = k
            k += 1
    return codes


def batch_geometry(batch: AtomsBatch) -> tuple[np.ndarray, np.ndarray]:
    """(structures, pairs) shortest distance of each species pair (``pair_names`` order) and (atoms,)
    nearest-neighbour distance, from the batch's pair list; ∞ where no pair lies within the cutoff."""
    n = len(batch.species)
    codes = torch.as_tensor(_pair_codes(n), device=batch.positions.device)
    n_codes = n * (n + 1) // 2
    with torch.no_grad():
        vectors = batch.positions[batch.pair_j] - batch.positions[batch.pair_i] + batch.pair_shift
        distance = torch.linalg.vector_norm(vectors, dim=1)
        kind = codes[batch.species_index[batch.pair_i], batch.species_index[batch.pair_j]]
        slot = batch.structure_index[batch.pair_i] * n_codes + kind
        inf = torch.tensor(float("inf"), dtype=distance.dtype, device=distance.device)
        shortest = inf.repeat(batch.n_structures * n_codes).scatter_reduce(0, slot, distance, "amin")
        nearest = inf.repeat(batch.positions.shape[0])
        nearest = nearest.scatter_reduce(0, batch.pair_i, distance, "amin")
        nearest = nearest.scatter_reduce(0, batch.pair_j, distance, "amin")
    return shortest.reshape(-1, n_codes).cpu().numpy(), nearest.cpu().numpy()


@dataclass
class Evaluation:
    """The model's energy (eV) and forces (eV/Å) of one structure with its geometry, or why there are none
    (``problem``: the neighbour search refused the structure, e.g. atoms that coincide)."""

    energy: float = float("nan")
    forces: np.ndarray | None = None
    shortest: np.ndarray | None = None
    nearest: np.ndarray | None = None
    problem: str | None = None


def evaluate(potential, structures: Sequence[Structure]) -> list[Evaluation]:
    """Energies, forces and geometry of ``structures``, in batches of up to ``BATCH_ATOMS`` atoms (a structure
    larger than that alone)."""
    results, chunk, size = [], [], 0
    for s in structures:
        if chunk and size + len(s) > BATCH_ATOMS:
            results += evaluate_batch(potential, chunk)
            chunk, size = [], 0
        chunk.append(s)
        size += len(s)
    return results + (evaluate_batch(potential, chunk) if chunk else [])


def evaluate_batch(potential, structures: Sequence[Structure]) -> list[Evaluation]:
    """Energies, forces and geometry of ``structures`` in one batch. A structure the neighbour search refuses
    gets its ``problem`` and the others are evaluated without it (a run that broke must not stop the rest)."""
    try:
        batch = make_batch(structures, potential.species, potential.descriptor.cutoff, device=potential.device,
                           close=[])
    except InputError as exc:
        if len(structures) == 1:
            return [Evaluation(problem=exc.problem)]
        return [result for s in structures for result in evaluate_batch(potential, [s])]
    energies, forces, _ = potential.energy_and_derivatives(batch, forces=True)
    shortest, nearest = batch_geometry(batch)
    bounds = np.cumsum([0] + [len(s) for s in structures])
    forces = forces.detach().cpu().numpy()
    return [Evaluation(float(e), forces[a:b], shortest[k], nearest[a:b])
            for k, (e, a, b) in enumerate(zip(energies.tolist(), bounds[:-1], bounds[1:]))]


def shortest_distances(structures: Sequence[Structure], species: Sequence[str], cutoff: float) -> np.ndarray:
    """The shortest distance of each species pair (``pair_names`` order) over all ``structures``, within
    ``cutoff`` (∞ for a pair that never comes that close)."""
    n_codes = len(species) * (len(species) + 1) // 2
    best = np.full(n_codes, np.inf)
    for start in range(0, len(structures), SCAN_CHUNK):
        batch = make_batch(structures[start:start + SCAN_CHUNK], species, cutoff, close=[])
        best = np.minimum(best, batch_geometry(batch)[0].min(axis=0, initial=np.inf))
    return best
