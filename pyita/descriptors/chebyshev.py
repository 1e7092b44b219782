r"""aenet's Chebyshev descriptor (Artrith, Urban & Ceder, PRB 96, 014112 (2017)) in PyTorch.

The definition follows aenet's ``src/ext/sfbasis.f90`` (``new_SFBasis``, ``sfb_eval``, ``sfb_radial``,
``sfb_angular``, ``sfb_fc``), ``src/ext/chebyshev.f90`` and ``src/sfsetup.f90`` (``read_basis_chebyshev``),
so that a network trained here sees the features aenet's ``generate.x`` writes (before the per-feature
normalisation ``train.x`` applies). For a central atom i with neighbours j at distance r_ij:

* cutoff: :math:`f_c(r) = \tfrac12[\cos(\pi r/R_c) + 1]` for r < R_c, else 0.
* radial, n = 0 … radial_n (radial_n + 1 functions):
  :math:`G^R_n(i) = \sum_{j:\,r_{ij}\le R_c^R} T_n(2 r_{ij}/R_c^R - 1)\, f_c(r_{ij}; R_c^R)`.
* angular, n = 0 … angular_n, over *unordered* neighbour pairs j < k (each triplet once):
  :math:`G^A_n(i) = \sum_{j<k;\ r_{ij},r_{ik}\le R_c^A} T_n(\cos\theta_{ijk})\, f_c(r_{ij}; R_c^A)\, f_c(r_{ik}; R_c^A)`
  — the angle's cosine is the Chebyshev argument as is (interval [-1, 1], no rescaling).
* T_n are Chebyshev polynomials of the first kind; there is no other scaling factor.
* With more than one species every sum is repeated with each neighbour weighted by its "typespin" s
  (s_j in the radial sum, s_j s_k in the angular one). aenet assigns s to the species in the order of the
  setup's ``ENV`` list — here the order of ``species`` — as the integers −⌊n/2⌋ … upwards, skipping 0
  when n is even: (−1, 1) for two species, (−1, 0, 1) for three, (−2, −1, 1, 2) for four.
* Feature order: radial (radial_n + 1), angular (angular_n + 1), then for several species weighted
  radial and weighted angular. Count (radial_n + angular_n + 2), doubled for several species: 44 for
  Ti, O with radial_n = 16 and angular_n = 4.

Evaluation does not loop over triplets (about 6000 per atom in bulk TiO2 at 6.5 Å). The angular sum is
rewritten exactly with the addition theorem: expand :math:`T_n(x) = \sum_l a_{nl} P_l(x)` in Legendre
polynomials and use :math:`P_l(\hat u\cdot\hat v) = \sum_m Y_{lm}(\hat u) Y_{lm}(\hat v)` with real
harmonics normalised to that identity, so that with :math:`w_j = f_c(r_{ij})` (times s_j for the
weighted channel)

.. math:: \sum_{j<k} w_j w_k T_n(\cos\theta_{jk})
          = \tfrac12\Big[\sum_l a_{nl} \sum_m \Big(\sum_j w_j Y_{lm}(\hat r_{ij})\Big)^2 - \sum_j w_j^2\Big],

the last term removing j = k (where T_n(1) = 1). The cost is linear in the number of pairs; the inner
sums are sums of squares, which avoids the cancellation between large powers of cos θ a monomial
expansion would suffer at high angular_n; and every step is smooth in the positions (the harmonics are
polynomials of the unit vector), so autograd gives exact forces and second derivatives.

Where aenet and this module differ: aenet's neighbour loop reuses the previous neighbour's typespin
when angular_rc > radial_rc (``s_j`` is only updated inside the radial branch); this module always uses
the neighbour's own weight, and warns about such settings. Atoms closer than 1e-6 Å are rejected
rather than skipped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from pyita.architecture import ChebyshevSetup
from pyita.descriptors.neighbors import AtomsBatch

#: aenet's value of pi in sfbasis.f90 (differs from math.pi by 3e-15); used in the cutoff function.
AENET_PI = 3.14159265358979


def typespin(n_species: int) -> list[float]:
    """aenet's species weights for ``n_species`` species, in ENV order (see module docstring)."""
    spins, s = [], -(n_species // 2)
    for _ in range(n_species):
        if s == 0 and n_species % 2 == 0:
            s += 1
        spins.append(float(s))
        s += 1
    return spins


def chebyshev_t(x: torch.Tensor, order: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """T_0 … T_order at ``x`` (times ``scale``), by the three-term recurrence; the order is the leading axis.

    The recurrence is linear, so starting it from ``scale`` and ``scale * x`` folds the factor in without
    another (order + 1)-row product.
    """
    values = [torch.ones_like(x) if scale is None else scale]
    if order > 0:
        values.append(x if scale is None else scale * x)
    for _ in range(2, order + 1):
        values.append(2.0 * x * values[-1] - values[-2])
    return torch.stack(values)


def real_harmonics(unit: torch.Tensor, lmax: int, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Real spherical harmonics of unit vectors (times ``scale``), with Σ_m Y_lm(u) Y_lm(v) = P_l(u·v).

    ``unit`` is (P, 3); the result is ((lmax + 1)^2, P), rows running l = 0 … lmax and within l: m = 0,
    then (cos mφ, sin mφ) for m = 1 … l (pairs along rows: summing them into atoms is faster that way).
    Built as polynomials in x, y, z — Re/Im (x + iy)^m times d^m P_l/dz^m — so they are smooth everywhere.
    """
    x, y, z = unit.unbind(1)
    # Re/Im of scale * (x + iy)^m: every row is a multiple of one of these, so it carries the scale.
    cos_m, sin_m = [torch.ones_like(x) if scale is None else scale], [torch.zeros_like(x)]
    for _ in range(lmax):
        cos_m.append(cos_m[-1] * x - sin_m[-1] * y)
        sin_m.append(sin_m[-1] * x + cos_m[-2] * y)
    # dP[l][m] = d^m P_l / dz^m, from (l-m+1) Q_{l+1} = (2l+1) z Q_l - (l+m) Q_{l-1} at fixed m.
    dP = [[None] * (lmax + 1) for _ in range(lmax + 1)]
    for m in range(lmax + 1):
        dP[m][m] = float(math.prod(range(2 * m - 1, 0, -2)))  # (2m - 1)!!, a constant
        if m < lmax:
            dP[m + 1][m] = (2 * m + 1) * z * dP[m][m]
        for l in range(m + 1, lmax):
            dP[l + 1][m] = ((2 * l + 1) * z * dP[l][m] - (l + m) * dP[l - 1][m]) / (l - m + 1)
    columns = []
    for l in range(lmax + 1):
        columns.append(dP[l][0] * cos_m[0])
        for m in range(1, l + 1):
            norm = math.sqrt(2.0 * math.factorial(l - m) / math.factorial(l + m))
            columns.append(norm * dP[l][m] * cos_m[m])
            columns.append(norm * dP[l][m] * sin_m[m])
    return torch.stack(columns)


def chebyshev_in_legendre(order: int) -> np.ndarray:
    """a[n, l] with T_n = Σ_l a[n, l] P_l for n, l ≤ order (Gauss–Legendre quadrature, exact here)."""
    nodes, weights = np.polynomial.legendre.leggauss(order + 1)
    cheb = np.cos(np.arange(order + 1)[:, None] * np.arccos(nodes)[None, :])
    leg = np.stack([np.polynomial.legendre.legval(nodes, np.eye(order + 1)[l]) for l in range(order + 1)])
    return (cheb * weights) @ leg.T * (2 * np.arange(order + 1) + 1) / 2.0


def _cutoff(r: torch.Tensor, rc: float) -> torch.Tensor:
    return 0.5 * (torch.cos((AENET_PI / rc) * r) + 1.0)


#: The settings' one home (aenet's TiO2 example): ``pyita.architecture.ChebyshevSetup``.
_DEFAULTS = ChebyshevSetup()


class ChebyshevDescriptor(torch.nn.Module):
    """aenet's Chebyshev descriptor; ``forward`` maps an :class:`AtomsBatch` to (atoms, n_features)."""

    def __init__(
        self,
        species: Sequence[str],
        radial_rc: float = _DEFAULTS.radial_rc,
        radial_n: int = _DEFAULTS.radial_n,
        angular_rc: float = _DEFAULTS.angular_rc,
        angular_n: int = _DEFAULTS.angular_n,
    ):
        super().__init__()
        species = tuple(species)
        if not species or len(set(species)) != len(species):
            raise ValueError(f"species must be a non-empty list without repeats, not {list(species)}")
        for name, value in (("radial_n", radial_n), ("angular_n", angular_n)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        for name, value in (("radial_rc", radial_rc), ("angular_rc", angular_rc)):
            if not value > 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a positive number of Å, not {value!r}")
        if angular_rc > radial_rc and len(species) > 1:
            warnings.warn("angular_rc > radial_rc: aenet itself mis-weights such settings for several species "
                          "(stale typespin), so its features will differ from these", stacklevel=2)
        self.species = species
        self.radial_rc, self.radial_n = float(radial_rc), int(radial_n)
        self.angular_rc, self.angular_n = float(angular_rc), int(angular_n)
        self.cutoff = max(self.radial_rc, self.angular_rc)
        self.multi = len(species) > 1
        self.n_features = (self.radial_n + self.angular_n + 2) * (2 if self.multi else 1)

        lmax = self.angular_n
        degree = np.repeat(np.arange(lmax + 1), 2 * np.arange(lmax + 1) + 1)
        legendre = chebyshev_in_legendre(lmax)
        # Harmonic row c has degree l = degree[c]: feature n sums a[n, l] * M_c^2 over the rows.
        self.register_buffer("_square_to_feature", torch.tensor(0.5 * legendre[:, degree].T), persistent=False)
        self.register_buffer("_parity", torch.tensor((-1.0) ** degree).unsqueeze(1), persistent=False)
        self.register_buffer("_spin", torch.tensor(typespin(len(species)), dtype=torch.float64), persistent=False)

    def settings(self) -> dict:
        """JSON-able keyword arguments that rebuild this descriptor."""
        return {
            "species": list(self.species),
            "radial_rc": self.radial_rc,
            "radial_n": self.radial_n,
            "angular_rc": self.angular_rc,
            "angular_n": self.angular_n,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings().items())

    def forward(self, batch: AtomsBatch) -> torch.Tensor:
        """Features (M, n_features), float64, differentiable (twice) with respect to ``batch.positions``."""
        if batch.cutoff < self.cutoff:
            raise ValueError(f"the batch's pairs reach {batch.cutoff} Å but the descriptor needs {self.cutoff} Å")
        if batch.species and tuple(batch.species) != self.species:
            raise ValueError(f"the batch indexes species {batch.species}, the descriptor has {self.species}")
        positions = batch.positions
        n_atoms, n_species = positions.shape[0], len(self.species)
        i, j = batch.pair_i, batch.pair_j
        vectors = positions[j] - positions[i] + batch.pair_shift
        distances = torch.linalg.vector_norm(vectors, dim=1)
        # Sums are kept apart by the neighbour's species (slot centre * n_species + species of the other
        # atom); both channels are combinations of those slots. A pair counts for both of its atoms.
        slot_i = i * n_species + batch.species_index[j]
        slot_j = j * n_species + batch.species_index[i]
        radial = self._radial(distances, slot_i, slot_j, n_atoms, batch.cutoff)
        angular = self._angular(vectors, distances, slot_i, slot_j, n_atoms)
        return torch.cat([radial[0], angular[0], radial[1], angular[1]] if self.multi
                         else [radial[0], angular[0]], dim=1)

    def _channels(self, per_species: torch.Tensor, spin: torch.Tensor) -> torch.Tensor:
        """(width, atoms, species) sums -> (channels, atoms, width): plain, and weighted by ``spin``."""
        plain = per_species.sum(dim=2).T
        if not self.multi:
            return plain.unsqueeze(0)
        return torch.stack([plain, (per_species @ spin).T])

    def _radial(self, distances, slot_i, slot_j, n_atoms, reach):
        if reach > self.radial_rc:
            inside = torch.nonzero(distances.detach() < self.radial_rc).squeeze(1)
            distances, slot_i, slot_j = distances[inside], slot_i[inside], slot_j[inside]
        values = chebyshev_t(2.0 * distances / self.radial_rc - 1.0, self.radial_n,
                             _cutoff(distances, self.radial_rc))
        sums = values.new_zeros(self.radial_n + 1, n_atoms * len(self.species))
        sums = sums.index_add(1, slot_i, values).index_add(1, slot_j, values)
        return self._channels(sums.view(self.radial_n + 1, n_atoms, len(self.species)), self._spin)

    def _angular(self, vectors, distances, slot_i, slot_j, n_atoms):
        inside = torch.nonzero(distances.detach() < self.angular_rc).squeeze(1)
        r, slot_i, slot_j = distances[inside], slot_i[inside], slot_j[inside]
        weight = _cutoff(r, self.angular_rc)
        moments = real_harmonics(vectors[inside] / r.unsqueeze(1), self.angular_n, weight)
        n_slots = n_atoms * len(self.species)
        # Atom j sees atom i in direction -r_ij, and Y_lm(-u) = (-1)^l Y_lm(u).
        sums = (moments.new_zeros(moments.shape[0], n_slots).index_add(1, slot_i, moments)
                + self._parity * moments.new_zeros(moments.shape[0], n_slots).index_add(1, slot_j, moments))
        # Σ_j w_j^2 (times s_j^2 when weighted): the j = k terms the squares include.
        squares = (weight * weight).unsqueeze(0)
        diagonal = squares.new_zeros(1, n_slots).index_add(1, slot_i, squares).index_add(1, slot_j, squares)
        channels = self._channels(sums.view(sums.shape[0], n_atoms, len(self.species)), self._spin)
        diagonal = self._channels(diagonal.view(1, n_atoms, len(self.species)), self._spin * self._spin)
        return (channels * channels) @ self._square_to_feature - 0.5 * diagonal
