"""Whether a structure's geometry can be used: atoms that coincide or nearly do, and what the neighbour
search (vesin) can take — asked before any descriptor is computed, because vesin does not fail cleanly."""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Sequence

import numpy as np

from pyita.errors import InputError
from pyita.memory import available_memory
from pyita.structure import Structure


#: Atoms closer than this (Å) coincide: the direction between them, and so any descriptor, is undefined.
MIN_DISTANCE = 1e-6


#: Atoms closer than this (Å) are almost surely a mistake (an atom listed twice, a slipped coordinate):
#: warned about, as no descriptor or DFT label means much there.
NEAR_DISTANCE = 0.5


#: How many structures a near-coincidence warning names before it only counts the rest.
NEAR_SHOWN = 3


_NEAR_WHY = f"closer than {NEAR_DISTANCE} Å: an atom listed twice or a broken structure?"


#: vesin's cell list uses search cells of about one cutoff, at most this many: above, it shrinks them in
#: proportion, and a box many cutoffs long in one or two directions only gets zero cells (SIGFPE).
_VESIN_MAX_CELLS = 1e5


#: More neighbours per atom within a cutoff than any material has (diamond: about 740 within 10 Å): a cell
#: far too small for its atoms (wrong units?), whose pair list would exhaust memory.
MAX_NEIGHBOURS_PER_ATOM = 5000


#: Memory a neighbour pair takes in vesin (with its growth) and in the pair arrays made from it, in bytes.
_BYTES_PER_PAIR = 200


def _cross(u: list[float], v: list[float]) -> tuple[float, float, float]:
    return (u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0])


def neighbor_search_problem(positions: np.ndarray, cell: np.ndarray | None, cutoff: float) -> str | None:
    """Why a neighbour search (vesin) within ``cutoff`` cannot take this structure, or None.

    Asked before every search, because vesin does not fail cleanly: a box it cannot divide into cells kills
    the process (SIGFPE), and a pair list larger than memory ends in a crash after a failed allocation.
    """
    n_atoms = len(positions)
    if not np.isfinite(positions).all():
        return "positions contain NaN or infinity"
    if cell is None:   # vesin's box: the atoms' bounding box, about 1% wider
        span = np.ptp(positions, axis=0) if n_atoms else np.zeros(3)
        faces, volume = span * 1.02, float(np.prod(span + cutoff))
    else:   # plain floats: numpy's cross and det cost more than the rest of the check on a 3 x 3 cell
        a, b, c = np.asarray(cell, dtype=float).tolist()
        normals = [_cross(b, c), _cross(c, a), _cross(a, b)]
        volume = abs(sum(x * y for x, y in zip(a, normals[0])))
        faces = span = np.array([volume / math.hypot(*n) if any(n) else 0.0 for n in normals])
    cells = np.maximum(np.trunc(faces / cutoff), 1.0)
    if cells.prod() > _VESIN_MAX_CELLS:   # vesin's own rescaling, to see whether a direction drops to zero
        ratio_xy, ratio_yz = cells[0] / cells[1], cells[1] / cells[2]
        nz = np.trunc(np.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz)))
        ny = np.trunc(ratio_yz * nz)
        if min(nz, ny, np.trunc(ratio_xy * ny)) < 1:
            return (f"the structure is {span.max():.4g} Å across, {span.max() / cutoff:.3g} times the {cutoff:g} Å "
                    "cutoff: too wide for the neighbour search (an atom far from the others? wrong units?)")
    neighbours = n_atoms * (4 / 3) * np.pi * cutoff ** 3 / volume if volume > 0 else np.inf
    if cell is None:
        neighbours = min(neighbours, n_atoms - 1)
    if neighbours > MAX_NEIGHBOURS_PER_ATOM:
        return (f"about {neighbours:.3g} neighbours per atom within the {cutoff:g} Å cutoff ({n_atoms} atoms in "
                f"{volume:.3g} Å³; a solid has a few hundred): the cell is far too small (wrong units?)")
    need = n_atoms * neighbours / 2 * _BYTES_PER_PAIR
    free = available_memory() if need > 2**28 else None   # limits read only when they may matter
    if free is not None and need > free:
        return (f"its neighbour list within {cutoff:g} Å would need about {need / 2**30:.3g} GiB, more memory "
                "than is available")
    return None


#: Atom pairs compared at once when checking for close atoms (bounds memory: a few arrays of 12 bytes per
#: pair); a structure with more pairs than _ALL_PAIRS_MAX goes through a neighbour list instead.
_PAIRS_PER_BATCH = 1 << 16


_ALL_PAIRS_MAX = 1 << 20


_TRIU: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def close_atoms(structures: Sequence[Structure],
                names: Sequence[str] | None = None) -> list[tuple[int, CloseAtomsWarning]]:
    """(index, warning not yet issued) for each of ``structures`` with two atoms closer than NEAR_DISTANCE
    (its closest pair, nearest periodic image); ``names`` name them in messages (default: their sources).

    Vectorised over many structures, batched by size: about 15 µs per parent of ~20 atoms inside
    augmentation, which checks every parent, where one structure at a time costs 25–40 µs.
    """
    hits, batch = [], []

    def check(batch):
        return [(batch[b], i, j, d) for b, i, j, d in _close_all_pairs([structures[k] for k in batch])]

    for k in sorted((k for k, s in enumerate(structures) if len(s) > 1), key=lambda k: len(structures[k])):
        pairs = len(structures[k]) * (len(structures[k]) - 1) // 2
        if pairs > _ALL_PAIRS_MAX:
            hits += [(k, *hit) for hit in _close_neighbor_list(
                structures[k], names[k] if names is not None else structures[k].source or f"structure {k + 1}")]
            continue
        if batch and (len(batch) + 1) * pairs > _PAIRS_PER_BATCH:  # sizes only grow: the batch pads to this one
            hits += check(batch)
            batch = []
        batch.append(k)
    if batch:
        hits += check(batch)
    return [(k, CloseAtomsWarning(names[k] if names is not None else structures[k].source or f"structure {k + 1}",
                                  i, j, d)) for k, i, j, d in sorted(hits)]


def _close_all_pairs(structures: list[Structure]) -> list[tuple[int, int, int, float]]:
    """(structure, atom, atom, distance) for each structure with a pair closer than NEAR_DISTANCE.

    Structures are padded to the largest and laid out pair by structure, so that each step is one NumPy
    call on a block that fits the cache; pairs are compared in single precision (a few 1e-6 Å), plenty
    for a threshold of 0.5 Å. Fractional differences rounded to the nearest integer give the nearest image
    of every pair closer than half the cell's smallest width: exact here for any real cell. An isolated
    structure gets a box more than twice as wide as any difference of its coordinates, where none rounds
    away from zero. Singular cells are left to the descriptor, which refuses them.
    """
    sizes = [len(s) for s in structures]
    n, count = max(sizes), len(structures)
    if n not in _TRIU:
        _TRIU[n] = np.triu_indices(n, 1)
    i, j = _TRIU[n]
    owner = np.repeat(np.arange(count), sizes)
    local = np.arange(len(owner)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    cells = np.array([s.cell if s.cell is not None else np.eye(3) * (4 * np.abs(s.positions).max() + 1)
                      for s in structures])
    singular = _singular(cells)
    cells[singular] = np.eye(3)
    padded = np.zeros((n, count, 3))
    padded[local, owner] = np.concatenate([s.positions for s in structures])
    fractional = np.matmul(padded.transpose(1, 0, 2), np.linalg.inv(cells))
    fractional = fractional.transpose(1, 0, 2).reshape(n, count * 3).astype(np.float32)
    d = fractional[j]
    d -= fractional[i]
    d -= np.rint(d)
    d = np.matmul(d.reshape(-1, count, 3).transpose(1, 0, 2), cells.astype(np.float32))
    d2 = np.einsum("bpk,bpk->bp", d, d)
    d2[j[None, :] >= np.array(sizes)[:, None]] = np.inf  # pairs with padding atoms
    k = d2.argmin(axis=1)
    best = d2[np.arange(count), k]
    return [(int(b), int(i[k[b]]), int(j[k[b]]), float(np.sqrt(best[b])))
            for b in np.flatnonzero((best < NEAR_DISTANCE ** 2) & ~singular)]


def _singular(cells: np.ndarray) -> np.ndarray:
    """Which of the cells (…, 3, 3) have (nearly) linearly dependent lattice vectors."""
    return np.abs(np.linalg.det(cells)) <= 1e-6 * np.prod(np.linalg.norm(cells, axis=-1), axis=-1)


def _close_neighbor_list(structure: Structure, name: str) -> list[tuple[int, int, float]]:
    """The closest pair of a large structure if closer than NEAR_DISTANCE, from a neighbour list (imported
    here: it takes a second, which only structures this large are worth)."""
    import vesin

    positions, cell = structure.positions, structure.cell
    if cell is not None:
        if _singular(cell):
            return []
        positions = positions - np.floor(positions @ np.linalg.inv(cell)) @ cell
    problem = neighbor_search_problem(positions, cell, NEAR_DISTANCE)
    if problem is not None:
        raise InputError(problem, name)
    i, j, d = vesin.NeighborList(cutoff=NEAR_DISTANCE, full_list=False).compute(
        positions, np.zeros((3, 3)) if cell is None else cell, cell is not None, "ijd")
    pairs = np.flatnonzero(i != j)  # an atom and its own image: only in cells thinner than NEAR_DISTANCE
    if not len(pairs):
        return []
    k = pairs[np.argmin(d[pairs])]
    return [(int(i[k]), int(j[k]), float(d[k]))]


class CloseAtomsWarning(UserWarning):
    """Two atoms of one structure closer than NEAR_DISTANCE; keeps its parts so that many can be reported
    as one line (see ``warn_close_atoms``)."""

    def __init__(self, where: str, i: int, j: int, distance: float):
        self.where, self.i, self.j, self.distance = where, i, j, distance
        super().__init__(f"{where}: {self.atoms} are only {distance:.3f} Å apart ({_NEAR_WHY})")

    def __reduce__(self):  # rebuilt from its parts when sent back from a worker process
        return CloseAtomsWarning, (self.where, self.i, self.j, self.distance)

    @property
    def atoms(self) -> str:
        if self.i == self.j:
            return f"atom {self.i + 1} and its own periodic image"
        return f"atoms {self.i + 1} and {self.j + 1}"

    def refuse_coincident(self) -> None:
        """Raise the error for atoms that coincide, where a descriptor would give NaN."""
        if self.distance < MIN_DISTANCE:
            raise InputError(f"{self.atoms} coincide ({self.distance:.1e} Å apart): the descriptor is "
                             "undefined there; remove the duplicate atom", self.where)


_REPORTED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def first_report(structure: Structure) -> bool:
    """True the first time ``structure`` (this object) is reported close in this process: training checks
    its data, then featurizes and predicts the same structures, and one warning for each is enough."""
    if _REPORTED.get(id(structure)) is structure:
        return False
    _REPORTED[id(structure)] = structure
    return True


def warn_close_atoms(found: list[CloseAtomsWarning], context: str = "") -> None:
    """Issue ``found`` as one warning: the structure itself when alone, else the first NEAR_SHOWN and a count;
    ``context`` says which data (e.g. "test data")."""
    context = f" ({context})" if context else ""
    if len(found) == 1:
        w = found[0]
        warnings.warn(f"{w.where}{context}: {w.atoms} are only {w.distance:.3f} Å apart ({_NEAR_WHY})",
                      stacklevel=2)
    elif found:
        shown = "; ".join(f"{w.where} ({w.atoms}, {w.distance:.3f} Å)" for w in found[:NEAR_SHOWN])
        more = f"; and {len(found) - NEAR_SHOWN} more" if len(found) > NEAR_SHOWN else ""
        warnings.warn(f"{len(found)} structures{context} have atoms closer than {NEAR_DISTANCE} Å "
                      f"(an atom listed twice or a broken structure?): {shown}{more}", stacklevel=2)
