"""Where to displace: the three strategies of docs/method.md.

Each strategy turns a parent (and its position in the data set) into a list of displacement fields D
(N×3). Per-parent strategies draw from a generator seeded by (seed, parent index), so results do not depend
on how the data set is streamed or split over processes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from pyita.errors import PyitaError
from pyita.structure import Structure

#: The paper's direction order: +x +y +z −x −y −z.
DIRECTIONS = ("+x", "+y", "+z", "-x", "-y", "-z")
_UNIT = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0], [0, -1, 0], [0, 0, -1]], dtype=np.float64)


@dataclass(frozen=True)
class Move:
    """One displacement of one parent: every atom (``field``, N×3, atom = None), or a single atom moved by
    ``vector`` along ``direction`` (the N×3 ``displacement`` is then built only when asked for)."""

    field: np.ndarray | None = None
    atom: int | None = None
    direction: str | None = None
    vector: tuple[float, float, float] | None = None
    n_atoms: int = 0

    @property
    def displacement(self) -> np.ndarray:
        """The displacement D of every atom (N×3, Å)."""
        if self.field is not None:
            return self.field
        d = np.zeros((self.n_atoms, 3))
        d[self.atom] = self.vector
        return d


def copies_for(parent_index: int, a: float) -> int:
    """How many derived structures parent ``parent_index`` gets so that any prefix of n parents has
    floor(a·n) in total: exactly a each for integer a, never more than one apart otherwise."""
    return math.floor(a * (parent_index + 1) + 1e-9) - math.floor(a * parent_index + 1e-9)


def copies_total(n_parents: int, a: float) -> int:
    """floor(a·n): the derived structures asked for from ``n_parents`` (the sum of ``copies_for``)."""
    return math.floor(a * n_parents + 1e-9)


def eligible_atoms(parent: Structure, max_force: float | None) -> np.ndarray:
    """Atoms whose force norm stays within ``max_force`` (the Taylor error grows with |F| and curvature)."""
    if max_force is None:
        return np.arange(len(parent))
    return np.flatnonzero(np.linalg.norm(parent.forces, axis=1) <= max_force)


_UNIT_TUPLES = [tuple(float(v) for v in row) for row in _UNIT]


def single_atom_move(n_atoms: int, atom: int, direction: int, delta: float) -> Move:
    ux, uy, uz = _UNIT_TUPLES[direction]
    return Move(None, int(atom), DIRECTIONS[direction], (delta * ux, delta * uy, delta * uz), n_atoms)


class SequentialPlan:
    """The seed paper's walk: atoms in file order, six directions each, until a·N structures exist.

    Stateful because the walk spans parents: with a = 4 on 7815 TiO2 structures all new structures come
    from the first ~250 parents.
    """

    def __init__(self, a: float, n_parents: int, delta: float, max_force: float | None):
        self.remaining = copies_total(n_parents, a)
        self.delta = delta
        self.max_force = max_force

    def moves(self, parent: Structure) -> list[Move]:
        out = []
        for atom in eligible_atoms(parent, self.max_force):
            for direction in range(6):
                if self.remaining <= 0:
                    return out
                out.append(single_atom_move(len(parent), atom, direction, self.delta))
                self.remaining -= 1
        return out


def draw_distinct(m: int, k: int, key: tuple[int, int]) -> list[int]:
    """``min(k, m)`` distinct integers from range(m), every subset equally likely (Floyd's algorithm).

    The random numbers come from a counter-based stream, BLAKE2b of (key, counter): the draw depends on
    ``key`` (seed, parent index) only, is the same on every platform and costs a few microseconds, where
    seeding a NumPy generator per parent costs more than the rest of the parent's augmentation.
    """
    k = min(k, m)
    prefix = f"pyita:{key[0]}:{key[1]}:".encode()
    chosen, seen = [], set()
    for j in range(m - k, m):
        digest = hashlib.blake2b(prefix + str(j).encode(), digest_size=8).digest()
        t = int.from_bytes(digest, "little") % (j + 1)
        if t in seen:
            t = j
        seen.add(t)
        chosen.append(t)
    return chosen


def balanced_moves(parent: Structure, count: int, delta: float, key: tuple[int, int],
                   max_force: float | None) -> list[Move]:
    """``count`` distinct (atom, direction) pairs drawn without replacement; all pairs when count ≥ 6·N.

    ``key`` = (seed, parent index) decides the draw (see ``draw_distinct``).
    """
    atoms = eligible_atoms(parent, max_force).tolist()
    n = len(parent)
    return [single_atom_move(n, atoms[p // 6], p % 6, delta) for p in draw_distinct(len(atoms) * 6, count, key)]


def random_all_moves(parent: Structure, count: int, delta: float, rng: np.random.Generator,
                     cap: float, max_force: float | None) -> list[Move]:
    """Every atom displaced at once: Gaussian, net translation removed, RMS per-atom |D_i| exactly δ,
    and no atom moved more than ``cap``·δ (redrawn until it holds, which is rare for cap ≥ 3).

    Isolated single atoms cannot be displaced without a net translation and get none; parents with any
    force above ``max_force`` are skipped as a whole.
    """
    n = len(parent)
    if n < 2 or (max_force is not None and len(eligible_atoms(parent, max_force)) < n):
        return []
    if cap * cap < n / (n - 1) - 1e-12:
        raise PyitaError(f"cap {cap} is too small: with zero net translation some atom moves ≥ δ·√(N/(N−1))")
    moves = []
    while len(moves) < count:
        for _ in range(10_000):
            d = rng.standard_normal((n, 3))
            d -= d.mean(axis=0)
            d *= delta / math.sqrt(np.mean(np.sum(d * d, axis=1)))
            if np.linalg.norm(d, axis=1).max() <= cap * delta:
                moves.append(Move(d))
                break
        else:
            raise PyitaError(f"could not draw a displacement within cap {cap}·δ for {n} atoms; raise --cap")
    return moves
