r"""Exact descriptor Jacobians dG/dR, computed once, so that direct force training needs no descriptor calls.

For a fixed structure, predicted forces are linear in the network's feature gradients v = ∂E/∂G:
F = −(dG/dR)ᵀ v. Storing dG/dR turns every force evaluation (and, through autograd on that linear map,
every force-loss gradient) into one small dense product per structure, instead of a double backward
through the descriptor (measured ≈ 100 s per epoch on 1000 TiO2 structures; ≈ 0.3 s this way).

Per structure the Jacobian is dense, N·F × N·3 (periodic images of a pair add into one block), which for
cells of tens of atoms is smaller than any per-pair storage: 1000 TiO2 structures need ~0.65 GB.

The blocks are assembled from per-pair derivatives of the descriptor's pair terms (see
:mod:`pyita.descriptors.chebyshev`): radial features are sums of φ_n(r_ij); angular features are
Σ_c S_cn M_ic² − ½ Q_i with moments M_ic = Σ_j w_j f_c(r_ij) Y_c(r̂_ij) and self terms Q_i = Σ_j w_j² f_c²,
so dG/dR needs only dφ/dr (analytic), d(f_c Y)/dr and d(f_c²)/dr (forward-mode autograd) per pair,
and the moments M. ``tests/test_train.py`` checks the result against autograd through the descriptor itself.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
import torch

from pyita.descriptors import ChebyshevDescriptor, make_batch, typespin
from pyita.descriptors.chebyshev import AENET_PI, _cutoff, chebyshev_in_legendre, chebyshev_t, real_harmonics
from pyita.structure import Structure

_BYTES = 8  # float64
#: Blocks (atom pairs) assembled per chunk; bounds the temporary memory to a few hundred MB.
CHUNK_BLOCKS = 40_000


def jacobian_bytes(structures: Sequence[Structure], n_features: int) -> int:
    """Memory the stored Jacobians of ``structures`` take (N² · F · 3 float64 each)."""
    return sum(len(s) ** 2 for s in structures) * n_features * 3 * _BYTES


class DescriptorJacobians:
    """dG/dR of many structures (or of those listed in ``only``), stored per atom count N as one tensor.

    ``groups`` maps N to (structure indices into the list given, Jacobians (B_N, N·F, N·3)).
    """

    def __init__(self, descriptor: ChebyshevDescriptor, structures: Sequence[Structure],
                 only: Sequence[int] | None = None, device=None):
        self.n_features = descriptor.n_features
        by_size: dict[int, list[int]] = defaultdict(list)
        for k in range(len(structures)) if only is None else only:
            by_size[len(structures[k])].append(k)
        self.groups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for n, members in sorted(by_size.items()):
            out = torch.empty((len(members), n * self.n_features, n * 3), dtype=torch.float64, device=device)
            per_chunk = max(1, CHUNK_BLOCKS // (n * n))
            for start in range(0, len(members), per_chunk):
                part = members[start:start + per_chunk]
                out[start:start + len(part)] = _jacobian_chunk(descriptor, [structures[k] for k in part], device)
            self.groups[n] = (torch.tensor(members, dtype=torch.long, device=device), out)

    def nbytes(self) -> int:
        return sum(j.numel() * j.element_size() for _, j in self.groups.values())


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


def _jacobian_chunk(descriptor: ChebyshevDescriptor, structures: Sequence[Structure], device) -> torch.Tensor:
    """Jacobians (B, N·F, N·3) of structures that all have N atoms.

    Only blocks dX_a/dR_k with k ≠ a are scattered from pairs: atom i's pair term depends on
    r_ij = R_j − R_i, so it adds +d to block (i, j), atom j's term adds −d to block (j, i). The diagonal
    follows from translation invariance, (a, a) = −Σ_{k≠a} (a, k), and the spin-weighted channel of an
    off-diagonal block is the plain one times the spin of atom k (the "other" atom of those pairs).
    """
    n, b = len(structures[0]), len(structures)
    batch = make_batch(structures, descriptor.species, descriptor.cutoff, device=device)
    positions, i, j = batch.positions, batch.pair_i, batch.pair_j
    vectors = positions[j] - positions[i] + batch.pair_shift
    distances = torch.linalg.vector_norm(vectors, dim=1)
    atoms = positions.shape[0]
    multi = descriptor.multi
    spins = torch.tensor(typespin(len(descriptor.species)), dtype=torch.float64, device=positions.device)[
        batch.species_index]
    spin_k = spins.view(b, 1, n).expand(b, n, n).reshape(atoms, n)  # spin of atom k in block (a, k)

    def off_diagonal(d_i: torch.Tensor, d_j: torch.Tensor, i, j) -> torch.Tensor:
        moving = torch.nonzero(i != j).squeeze(1)  # an atom and its own image keep their distance
        i, j = i[moving], j[moving]
        out = d_i.new_zeros((atoms * n,) + d_i.shape[1:])
        out.index_add_(0, i * n + j % n, d_i[moving]).index_add_(0, j * n + i % n, -d_j[moving])
        return out.view(atoms, n, *d_i.shape[1:])

    # Radial: X_a = Σ φ(|r_a·|), the same function on both sides of a pair; dφ/dr_ij = φ'(r) r̂.
    inside = torch.nonzero(distances < descriptor.radial_rc).squeeze(1)
    r = distances[inside]
    d_radial = _radial_derivative(r, descriptor.radial_rc, descriptor.radial_n).unsqueeze(-1) * \
        (vectors[inside] / r.unsqueeze(1)).unsqueeze(1)
    radial_blocks = off_diagonal(d_radial, d_radial, i[inside], j[inside])  # (a, k, radial_n + 1, 3)

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
    moment_blocks = off_diagonal(derivatives, derivatives * parity.view(1, -1, 1), ai, aj)

    # Channel weights: per atom (for the moment sums) and per block (a, k) — plain, then typespin.
    channels = [(torch.ones_like(spins), torch.ones_like(spin_k))] + ([(spins, spin_k)] if multi else [])
    pieces = []
    for weight, w_k in channels:
        # Moments of every atom (self-image pairs included), each term weighted by the other atom's spin.
        sums = values.new_zeros((atoms, values.shape[1]))
        sums.index_add_(0, ai, weight[aj].unsqueeze(1) * values)
        sums.index_add_(0, aj, weight[ai].unsqueeze(1) * parity * values)
        coefficient = 2.0 * sums[:, :-1].unsqueeze(-1) * square_to_feature  # (a, c, n)
        angular = torch.einsum("akcx,acn->aknx", moment_blocks[:, :, :-1], coefficient)
        angular = w_k[..., None, None] * angular - 0.5 * (w_k * w_k)[..., None, None] * moment_blocks[:, :, -1:]
        pieces += [w_k[..., None, None] * radial_blocks, angular]
    blocks = torch.cat(pieces, dim=2)  # (a, k, F, 3)
    diagonal = torch.arange(atoms, device=blocks.device)
    blocks[diagonal, diagonal % n] = -blocks.sum(dim=1)
    return blocks.view(b, n, n, -1, 3).permute(0, 1, 3, 2, 4).reshape(b, n * descriptor.n_features, n * 3)
