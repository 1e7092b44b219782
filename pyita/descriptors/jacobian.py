r"""Exact descriptor Jacobians dG/dR, computed once, so that direct force training needs no descriptor calls.

For a fixed structure, predicted forces are linear in the network's feature gradients v = ∂E/∂G:
F_k = −Σ_a (∂G_a/∂R_k)ᵀ v_a. Storing the blocks ∂G_a/∂R_k turns every force evaluation (and, through
autograd on that linear map, every force-loss gradient) into one pass over the stored blocks, instead of a
double backward through the descriptor (measured ≈ 100 s per epoch on 1000 TiO2 structures; ≈ 0.3 s this way).

Only the blocks of atom pairs (a, k) that interact are stored — k within the cutoff of a, in any periodic
image (images add into one block), and a itself — so memory grows with N × neighbours, linearly in the
number of atoms for a fixed density. In a cell smaller than the cutoff every pair interacts and this is the
dense N × N Jacobian. Each block is F × 3 float64 numbers.

The blocks are assembled from per-pair derivatives of the descriptor's pair terms (see
:mod:`pyita.descriptors.chebyshev`): radial features are sums of φ_n(r_ij); angular features are
Σ_c S_cn M_ic² − ½ Q_i with moments M_ic = Σ_j w_j f_c(r_ij) Y_c(r̂_ij) and self terms Q_i = Σ_j w_j² f_c²,
so dG/dR needs only dφ/dr (analytic), d(f_c Y)/dr and d(f_c²)/dr (forward-mode autograd) per pair,
and the moments M. ``tests/test_train.py`` checks the result against autograd through the descriptor itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from pyita.descriptors.chebyshev import (AENET_PI, ChebyshevDescriptor, _cutoff, chebyshev_in_legendre, chebyshev_t,
                                        real_harmonics, typespin)
from pyita.descriptors.neighbors import make_batch
from pyita.structure import Structure

#: Atoms whose blocks are assembled together; bounds the temporary memory (≈ 0.3 GB for dense oxides).
CHUNK_ATOMS = 1000


def _linked_pairs(i: torch.Tensor, j: torch.Tensor, atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct ordered atom pairs (a, k) of a pair list, both ways round, and every (a, a): as keys
    a · atoms + k, sorted, and each list entry's place among them (i→j, then j→i, then the diagonal).
    An atom and its own image keep their distance and link nothing."""
    moving = torch.nonzero(i != j).squeeze(1)
    diagonal = torch.arange(atoms, device=i.device) * (atoms + 1)
    keys = torch.cat([i[moving] * atoms + j[moving], j[moving] * atoms + i[moving], diagonal])
    return torch.unique(keys, return_inverse=True)


def block_count(structure: Structure, descriptor: ChebyshevDescriptor) -> int:
    """Number of blocks ``structure`` stores: ordered pairs of distinct atoms within the descriptor's
    cutoff (in any image), plus one per atom."""
    batch = make_batch([structure], descriptor.species, descriptor.cutoff, close=[])
    return len(_linked_pairs(batch.pair_i, batch.pair_j, len(structure))[0])


def jacobian_bytes(structures: Sequence[Structure], descriptor: ChebyshevDescriptor) -> int:
    """Memory the stored Jacobians of ``structures`` take: per block F × 3 float64 numbers and two indices."""
    per_block = descriptor.n_features * 3 * 8 + 2 * 8
    return sum(block_count(s, descriptor) for s in structures) * per_block


@dataclass
class ForceJacobians:
    """Stored blocks ∂G_a/∂R_k of the structures trained on forces, indexed like the data set they belong to.

    ``structures`` are the indices of those structures and ``atoms`` the atoms whose forces are predicted (all
    of theirs, or a share: see :func:`descriptor_jacobians`); ``parts`` holds (rows a, columns k, blocks
    (P, F, 3)) in pieces of bounded size.
    """

    structures: torch.Tensor
    atoms: torch.Tensor
    parts: list

    def forces(self, v: torch.Tensor) -> torch.Tensor:
        """Forces (len(atoms), 3) from feature gradients ``v`` (atoms of the set, F), differentiable in v."""
        return -_BlockProduct.apply(v, self.parts)[self.atoms]

    def renumber(self, structure_map: torch.Tensor, atom_map: torch.Tensor) -> ForceJacobians | None:
        """The same Jacobians in another numbering (old index → new, −1 where dropped), or None if none is
        left."""
        keep = torch.nonzero(structure_map[self.structures] >= 0).squeeze(1)
        if not len(keep):
            return None
        atoms = atom_map[self.atoms]
        parts = []
        for rows, cols, blocks in self.parts:
            new_rows, new_cols = atom_map[rows], atom_map[cols]
            if len(keep) < len(self.structures):
                inside = torch.nonzero(new_rows >= 0).squeeze(1)
                new_rows, new_cols, blocks = new_rows[inside], new_cols[inside], blocks[inside]
            if len(blocks):
                parts.append((new_rows, new_cols, blocks))
        return ForceJacobians(structure_map[self.structures[keep]], atoms[atoms >= 0], parts)

    def joined(self, other: ForceJacobians) -> ForceJacobians:
        """Both sets of Jacobians (already numbered in one set)."""
        return ForceJacobians(torch.cat([self.structures, other.structures]), torch.cat([self.atoms, other.atoms]),
                              self.parts + other.parts)


class StreamedJacobians:
    """The Jacobians of structures too many to store, computed when needed instead: in full for a mini-batch or a
    chunk (``renumber``, which :meth:`FeatureSet.subset` calls, returns stored :class:`ForceJacobians`), and chunk
    by chunk, each dropped after use, for forces on the whole set without gradients (monitoring)."""

    def __init__(self, descriptor: ChebyshevDescriptor, structures: Sequence[Structure], only: Sequence[int],
                 device=None, columns: dict[int, np.ndarray] | None = None):
        self.descriptor, self.all, self.only, self.device = descriptor, list(structures), list(only), device
        self.columns = columns
        self.structures = torch.tensor(self.only, dtype=torch.long, device=device)
        self.atoms = _force_atoms(self.all, self.only, columns).to(device)

    def forces(self, v: torch.Tensor) -> torch.Tensor:
        if v.requires_grad:
            raise RuntimeError("streamed Jacobians give forces without gradients only; differentiate a mini-batch's or "
                               "a chunk's (FeatureSet.subset)")
        return torch.cat([self._build(chunk).forces(v) for chunk in self.chunks()])

    def chunks(self) -> list[list[int]]:
        """The structures, in pieces of about ``CHUNK_ATOMS`` atoms: what streamed L-BFGS builds at once."""
        return chunked(self.only, self.all)

    def renumber(self, structure_map: torch.Tensor, atom_map: torch.Tensor) -> ForceJacobians | None:
        kept = self.structures[structure_map[self.structures] >= 0].tolist()
        return self._build(kept).renumber(structure_map, atom_map) if kept else None

    def _build(self, chosen: list[int]) -> ForceJacobians:
        return descriptor_jacobians(self.descriptor, self.all, chosen, self.device, self.columns)


class _BlockProduct(torch.autograd.Function):
    """out_k = Σ_a blocks(a, k)ᵀ v_a over the stored blocks, part by part, so no (P, F) temporary of all pairs
    is ever held; the backward pass is the transposed product over the same blocks."""

    @staticmethod
    def forward(ctx, v, parts):
        ctx.parts, ctx.rows = parts, v.shape[0]
        out = v.new_zeros((v.shape[0], 3))
        for rows, cols, blocks in parts:
            out.index_add_(0, cols, torch.einsum("pf,pfx->px", v[rows], blocks))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grad_v = None
        for rows, cols, blocks in ctx.parts:
            piece = torch.einsum("px,pfx->pf", grad[cols], blocks)
            grad_v = grad.new_zeros((ctx.rows, piece.shape[1])) if grad_v is None else grad_v
            grad_v.index_add_(0, rows, piece)
        return grad_v, None


def descriptor_jacobians(descriptor: ChebyshevDescriptor, structures: Sequence[Structure],
                         only: Sequence[int] | None = None, device=None,
                         columns: dict[int, np.ndarray] | None = None) -> ForceJacobians:
    """The Jacobians of ``structures`` (or of those listed in ``only``), numbered like the list given: a
    structure's index in it, an atom's place in all its structures concatenated. ``columns`` limits a
    structure's forces to some of its atoms (structure index → atom indices in it): only the blocks ∂G_a/∂R_k
    of those atoms k are kept, all that their forces need."""
    chosen = list(range(len(structures))) if only is None else list(only)
    parts = []
    for chunk in chunked(chosen, structures):
        where = _atom_places(structures, chunk).to(device)
        rows, cols, blocks = _pair_blocks(descriptor, [structures[m] for m in chunk], device)
        if columns is not None:
            keep = torch.nonzero(_column_mask(structures, chunk, columns).to(device)[cols]).squeeze(1)
            rows, cols, blocks = rows[keep], cols[keep], blocks[keep]
        parts.append((where[rows], where[cols], blocks))
    index = torch.tensor(chosen, dtype=torch.long, device=device)
    return ForceJacobians(index, _force_atoms(structures, chosen, columns).to(device), parts)


def _column_mask(structures: Sequence[Structure], chosen: Sequence[int], columns: dict[int, np.ndarray]):
    """Over the atoms of the structures ``chosen`` concatenated: True for those whose forces are used."""
    masks = []
    for m in chosen:
        mask = np.ones(len(structures[m]), dtype=bool)
        if m in columns:
            mask[:] = False
            mask[columns[m]] = True
        masks.append(mask)
    return torch.from_numpy(np.concatenate(masks)) if masks else torch.zeros(0, dtype=torch.bool)


def _force_atoms(structures: Sequence[Structure], chosen: Sequence[int],
                 columns: dict[int, np.ndarray] | None) -> torch.Tensor:
    """Places (among all atoms concatenated) of the atoms of ``chosen`` whose forces are predicted."""
    places = _atom_places(structures, chosen)
    return places if columns is None else places[_column_mask(structures, chosen, columns)]


def _atom_places(structures: Sequence[Structure], chosen: Sequence[int]) -> torch.Tensor:
    """Places of the atoms of the structures ``chosen`` among the atoms of all ``structures`` concatenated."""
    start = np.cumsum([0] + [len(s) for s in structures])
    return torch.cat([torch.arange(int(start[m]), int(start[m + 1])) for m in chosen]) if len(chosen) else \
        torch.zeros(0, dtype=torch.long)


def chunked(chosen: list[int], structures: Sequence[Structure]) -> list[list[int]]:
    """``chosen`` in consecutive pieces of about ``CHUNK_ATOMS`` atoms (a larger structure alone)."""
    pieces, chunk, filled = [], [], 0
    for k in chosen:
        chunk.append(k)
        filled += len(structures[k])
        if filled >= CHUNK_ATOMS:
            pieces.append(chunk)
            chunk, filled = [], 0
    return pieces + ([chunk] if chunk else [])


def _angular_constants(lmax: int, device):
    """Degree l of each harmonic column, and S[c, n] with G^A_n = Σ_c S[c, n] M_c² (the addition theorem)."""
    degree = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
    square_to_feature = 0.5 * chebyshev_in_legendre(lmax)[:, degree].T
    return (torch.tensor(degree, dtype=torch.float64, device=device),
            torch.tensor(square_to_feature, dtype=torch.float64, device=device))


def _radial_derivative(r: torch.Tensor, rc: float, order: int) -> torch.Tensor:
    """d/dr [f_c(r) T_n(2r/rc − 1)] for n = 0 … order, shape (P, order + 1).

    Uses T_n' = 2 T_{n−1} + 2x T_{n−1}' − T_{n−2}' alongside the recurrence for T_n.
    """
    x = 2.0 * r / rc - 1.0
    cutoff = _cutoff(r, rc)
    d_cutoff = -0.5 * (AENET_PI / rc) * torch.sin((AENET_PI / rc) * r)
    t = chebyshev_t(x, order)  # (order + 1, P)
    dt = [torch.zeros_like(x)] + ([torch.ones_like(x)] if order > 0 else [])
    for k in range(2, order + 1):
        dt.append(2.0 * t[k - 1] + 2.0 * x * dt[-1] - dt[-2])
    return (d_cutoff * t + cutoff * (2.0 / rc) * torch.stack(dt)).T


def _with_jacobian(function, vectors: torch.Tensor):
    """Values f(r) (P, K) and derivatives df/dr (P, K, 3) of a per-pair function of the pair vector."""
    def single(v):
        value = function(v.unsqueeze(0)).squeeze(0)
        return value, value

    return tuple(reversed(torch.func.vmap(torch.func.jacfwd(single, has_aux=True))(vectors)))


def _pair_blocks(descriptor: ChebyshevDescriptor, structures: Sequence[Structure], device):
    """(rows a, columns k, blocks ∂G_a/∂R_k (P, F, 3)) of ``structures``, atoms numbered as in one batch.

    Atom i's pair term depends on r_ij = R_j − R_i, so it adds +d to block (i, j), atom j's term adds −d to
    block (j, i). The diagonal follows from translation invariance, (a, a) = −Σ_{k≠a} (a, k), and the
    spin-weighted channel of a block is the plain one times the spin of atom k (the "other" atom of its pairs).
    """
    batch = make_batch(structures, descriptor.species, descriptor.cutoff, device=device)
    positions, i, j = batch.positions, batch.pair_i, batch.pair_j
    vectors = positions[j] - positions[i] + batch.pair_shift
    distances = torch.linalg.vector_norm(vectors, dim=1)
    atoms = positions.shape[0]
    keys, place = _linked_pairs(i, j, atoms)
    rows, cols = keys // atoms, keys % atoms
    moving = torch.nonzero(i != j).squeeze(1)
    forward = torch.full_like(i, -1)
    backward = torch.full_like(i, -1)
    forward[moving], backward[moving] = place[:len(moving)], place[len(moving):2 * len(moving)]
    spins = torch.tensor(typespin(len(descriptor.species)), dtype=torch.float64, device=positions.device)[
        batch.species_index]
    spin_k = spins[cols]

    def scattered(d_i: torch.Tensor, d_j: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Per-pair derivatives (of atom i's term, of atom j's term) added into their blocks."""
        linking = torch.nonzero(forward[pairs] >= 0).squeeze(1)
        pairs = pairs[linking]
        out = d_i.new_zeros((len(keys),) + d_i.shape[1:])
        return out.index_add_(0, forward[pairs], d_i[linking]).index_add_(0, backward[pairs], -d_j[linking])

    # Radial: X_a = Σ φ(|r_a·|), the same function on both sides of a pair; dφ/dr_ij = φ'(r) r̂.
    inside = torch.nonzero(distances < descriptor.radial_rc).squeeze(1)
    r = distances[inside]
    d_radial = _radial_derivative(r, descriptor.radial_rc, descriptor.radial_n).unsqueeze(-1) * \
        (vectors[inside] / r.unsqueeze(1)).unsqueeze(1)
    radial_blocks = scattered(d_radial, d_radial, inside)  # (P, radial_n + 1, 3)

    # Angular: moments M_a = Σ f_c Y(r̂) and self terms Q_a = Σ f_c² (last column). Atom j sees −r̂ and
    # Y(−u) = (−1)^l Y(u); f_c² is even. So atom j's term and its derivative are parity × atom i's.
    inside = torch.nonzero(distances < descriptor.angular_rc).squeeze(1)
    rc_a, lmax = descriptor.angular_rc, descriptor.angular_n
    ai, aj = i[inside], j[inside]

    def moment_and_self(v):
        r = torch.linalg.vector_norm(v, dim=1)
        weight = _cutoff(r, rc_a)
        return torch.cat([weight * real_harmonics(v / r.unsqueeze(1), lmax), (weight * weight).unsqueeze(0)]).T

    values, derivatives = _with_jacobian(moment_and_self, vectors[inside])
    degree, square_to_feature = _angular_constants(lmax, positions.device)
    parity = torch.cat([(-1.0) ** degree, degree.new_ones(1)])
    moment_blocks = scattered(derivatives, derivatives * parity.view(1, -1, 1), inside)

    # Channel weights: per atom (for the moment sums) and per block (a, k) — plain, then typespin.
    channels = [(torch.ones_like(spins), torch.ones_like(spin_k))] + ([(spins, spin_k)] if descriptor.multi else [])
    pieces = []
    for weight, w_k in channels:
        # Moments of every atom (self-image pairs included), each term weighted by the other atom's spin.
        sums = values.new_zeros((atoms, values.shape[1]))
        sums.index_add_(0, ai, weight[aj].unsqueeze(1) * values)
        sums.index_add_(0, aj, weight[ai].unsqueeze(1) * parity * values)
        coefficient = 2.0 * sums[:, :-1].unsqueeze(-1) * square_to_feature  # (a, c, n)
        angular = torch.einsum("pcx,pcn->pnx", moment_blocks[:, :-1], coefficient[rows])
        angular = w_k[:, None, None] * angular - 0.5 * (w_k * w_k)[:, None, None] * moment_blocks[:, -1:]
        pieces += [w_k[:, None, None] * radial_blocks, angular]
    blocks = torch.cat(pieces, dim=1)  # (P, F, 3)
    blocks[place[2 * len(moving):]] = -blocks.new_zeros((atoms,) + blocks.shape[1:]).index_add_(0, rows, blocks)
    return rows, cols, blocks
