"""Training data: reference energies, MAXENERGY filter, split by parent, and tensors ready for the networks.

A derived (Taylor) structure belongs to its parent: it is trained on only if the parent is, so the test
set never sees a displaced copy of a training structure, nor training a copy of a test structure.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np
import torch

from pyita.errors import InputError, PyitaError
from pyita.reference import cohesive_per_atom, max_energy_mask, total_energy
from pyita.geometry import close_atoms, first_report, warn_close_atoms
from pyita.structure import Structure, link_parents
from pyita.descriptors.jacobian import ForceJacobians, StreamedJacobians


def check_structures(structures: Sequence[Structure], what: str = "training data") -> None:
    """Clear errors for data no trainer can use: nothing, missing or non-finite labels, empty structures;
    one warning for the originals with atoms closer than ``NEAR_DISTANCE`` (here, and not only when
    featurizing, because later runs take their features from the cache)."""
    if not structures:
        raise PyitaError(f"{what} is empty: no structures to use")
    for k, s in enumerate(structures):
        where = s.source or f"{what}[{k}]"
        if len(s) == 0:
            raise InputError("structure has no atoms", where)
        if s.energy is None or not math.isfinite(s.energy):
            raise InputError(f"energy is missing or not finite ({s.energy})", where)
        if not np.isfinite(s.positions).all():
            raise InputError("positions contain NaN or infinity", where)
        if s.forces is not None and not np.isfinite(s.forces).all():
            raise InputError("forces contain NaN or infinity", where)
    originals = [s for s in structures if not s.is_derived]
    names = [s.source or f"{what}[{k}]" for k, s in enumerate(structures) if not s.is_derived]
    close = close_atoms(originals, names)
    for _, found in close:
        found.refuse_coincident()
    warn_close_atoms([found for k, found in close if first_report(originals[k])], what)


def species_of(structures: Sequence[Structure], preferred: Sequence[str] = ()) -> tuple[str, ...]:
    """Species in ``preferred`` order (e.g. generate.in's TYPES), then in order of first appearance."""
    present = dict.fromkeys(sym for s in structures for sym in s.symbols)
    return tuple([s for s in preferred if s in present] + [s for s in present if s not in preferred])


def parent_groups(structures: Sequence[Structure]) -> np.ndarray:
    """For each structure, the index of the original it belongs to (itself for originals; see
    ``pyita.structure.link_parents``). Derived structures whose parent is absent form groups of their own."""
    groups = link_parents(structures)
    orphans = np.flatnonzero(groups < 0)
    if len(orphans):
        warnings.warn(f"{len(orphans)} derived structures name no parent found in the data: each is split on its "
                      "own, so copies of held-out structures may train (keep parents and children together)",
                      stacklevel=2)
        groups[orphans] = orphans
    return groups


def take(structures: Sequence[Structure], indices: Sequence[int]) -> list[Structure]:
    """``structures[indices]`` with index-based parent links (``info["parent"]``) renumbered for the new
    list, so derived structures still find their parents after a split or a filter."""
    groups = parent_groups(structures)
    rank: dict[int, int] = {}
    for k in indices:
        if not structures[k].is_derived:
            rank[k] = len(rank)
    out = []
    for k in indices:
        s = structures[k]
        if s.is_derived and "parent" in s.info and groups[k] in rank and s.info["parent"] != rank[groups[k]]:
            s = s.copy()
            s.info["parent"] = rank[groups[k]]
        out.append(s)
    return out


def filter_max_energy(structures: Sequence[Structure], references: dict[str, float],
                      max_energy: float | None) -> list[int]:
    """Indices kept by aenet's MAXENERGY rule (cohesive energy per atom ≤ max_energy, in eV/atom).

    Judged on originals; derived structures follow their parent.
    """
    if max_energy is None:
        return list(range(len(structures)))
    groups = parent_groups(structures)
    kept = max_energy_mask(structures, references, max_energy)
    dropped = {k for k, s in enumerate(structures) if not s.is_derived and not kept[k]}
    return [k for k in range(len(structures)) if groups[k] not in dropped]


def split_by_parent(structures: Sequence[Structure], test_fraction: float = 0.1,
                    validation_fraction: float = 0.0, seed: int = 0) -> tuple[list[int], list[int], list[int]]:
    """(train, validation, test) indices; validation and test hold original structures only.

    Whole parent groups are drawn (seeded) for test and validation; their derived structures are dropped,
    so nothing derived from a held-out structure ever trains.
    """
    for name, value in (("test", test_fraction), ("validation", validation_fraction)):
        if not 0 <= value < 1:
            raise PyitaError(f"{name} fraction must be in [0, 1), got {value}")
    if test_fraction + validation_fraction >= 1:
        raise PyitaError("test and validation fractions leave nothing to train on")
    groups = parent_groups(structures)
    originals = np.array([k for k, s in enumerate(structures) if not s.is_derived])
    n = len(originals)

    def count(fraction):
        return 0 if fraction == 0 else max(1, int(round(fraction * n)))

    n_test, n_val = count(test_fraction), count(validation_fraction)
    if n - n_test - n_val < 1:
        raise PyitaError(f"{n} original structure{'s' * (n != 1)} cannot be split into test ({n_test}), "
                         f"validation ({n_val}) and a non-empty training set; use more data or smaller fractions")
    order = np.random.default_rng(seed).permutation(originals)
    test, val = sorted(order[:n_test].tolist()), sorted(order[n_test:n_test + n_val].tolist())
    held = set(test) | set(val)
    train = [k for k in range(len(structures)) if groups[k] not in held]
    return train, val, test


@dataclass
class FeatureSet:
    """Structures as tensors on one device, with features already normalised for a given potential.

    ``energy`` holds total energies (eV); ``forces`` NaN rows where a structure has no force labels;
    ``jacobians`` the dG/dR of the structures trained on forces (stored, or streamed when too large to store;
    see :mod:`pyita.descriptors.jacobian`), or None. ``parent`` is the index (in this set) of a derived structure's
    parent, or −1: the link a parent–child loss needs.
    """

    inputs: torch.Tensor
    species_index: torch.Tensor
    structure_index: torch.Tensor
    n_atoms: torch.Tensor
    reference_sum: torch.Tensor
    energy: torch.Tensor
    weight: torch.Tensor
    forces: torch.Tensor
    derived: torch.Tensor
    parent: torch.Tensor
    jacobians: ForceJacobians | StreamedJacobians | None = None

    def __post_init__(self) -> None:
        counts = self.n_atoms
        self.atom_start = torch.cumsum(counts, 0) - counts
        self.by_species = []
        for k in range(int(self.species_index.max()) + 1 if len(self.species_index) else 0):
            rows = torch.nonzero(self.species_index == k).squeeze(1)
            self.by_species.append((rows, self.inputs[rows], self.structure_index[rows]))

    def __len__(self) -> int:
        return int(self.n_atoms.shape[0])

    @classmethod
    def build(cls, structures: Sequence[Structure], features: Sequence[torch.Tensor], potential,
              weights: Sequence[float] | None = None, jacobians=None,
              parents: Sequence[int] | None = None) -> FeatureSet:
        """Tensors for ``structures`` (features from the descriptor, raw) on the potential's device.

        ``parents`` overrides the parent links found by :func:`parent_groups` (see :meth:`concat`).
        """
        device = potential.device
        lookup = {s: k for k, s in enumerate(potential.species)}
        references = potential.reference_energies()
        potential.check_species(structures)
        species_index = torch.tensor([lookup[sym] for s in structures for sym in s.symbols], device=device)
        n_atoms = torch.tensor([len(s) for s in structures], device=device)
        raw = torch.cat(list(features)).to(device)
        forces = torch.full((len(species_index), 3), float("nan"), dtype=torch.float64, device=device)
        start = 0
        for s in structures:
            if s.forces is not None and not s.is_derived:
                forces[start:start + len(s)] = torch.as_tensor(s.forces, device=device)
            start += len(s)
        if parents is None:
            groups = parent_groups(structures)
            parents = [int(groups[k]) if s.is_derived and groups[k] != k else -1 for k, s in enumerate(structures)]
        data = cls(
            inputs=potential.normalize(raw, species_index).detach(),
            species_index=species_index,
            structure_index=torch.repeat_interleave(torch.arange(len(structures), device=device), n_atoms),
            n_atoms=n_atoms,
            reference_sum=torch.tensor([sum(references[x] for x in s.symbols) for s in structures],
                                       dtype=torch.float64, device=device),
            energy=torch.tensor([total_energy(s, references) for s in structures], dtype=torch.float64,
                                device=device),
            weight=torch.tensor(np.ones(len(structures)) if weights is None else np.asarray(weights, float),
                                dtype=torch.float64, device=device),
            forces=forces,
            derived=torch.tensor([s.is_derived for s in structures], device=device),
            parent=torch.tensor(list(parents), dtype=torch.long, device=device),
        )
        data.jacobians = jacobians
        return data

    def atom_rows(self, indices: torch.Tensor) -> torch.Tensor:
        """The atoms (rows of ``inputs``) of the structures ``indices``, in that order: a subset's atom k is
        this set's atom ``atom_rows(indices)[k]``."""
        indices = torch.as_tensor(indices, device=self.n_atoms.device)
        counts = self.n_atoms[indices]
        first = torch.repeat_interleave(self.atom_start[indices], counts)
        local_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        return first + torch.arange(len(first), device=indices.device) - local_start

    def subset(self, indices: torch.Tensor) -> FeatureSet:
        """The structures ``indices`` (a mini-batch); parents outside the subset become −1."""
        indices = torch.as_tensor(indices, device=self.n_atoms.device)
        atoms = self.atom_rows(indices)
        new_position = torch.full((len(self),), -1, dtype=torch.long, device=indices.device)
        new_position[indices] = torch.arange(len(indices), device=indices.device)
        parent = self.parent[indices]
        sub = FeatureSet(
            inputs=self.inputs[atoms], species_index=self.species_index[atoms],
            structure_index=torch.repeat_interleave(torch.arange(len(indices), device=indices.device),
                                                    self.n_atoms[indices]),
            n_atoms=self.n_atoms[indices], reference_sum=self.reference_sum[indices],
            energy=self.energy[indices], weight=self.weight[indices], forces=self.forces[atoms],
            derived=self.derived[indices],
            parent=torch.where(parent >= 0, new_position[parent.clamp(min=0)], parent))
        if self.jacobians is not None:
            new_atom = torch.full((len(self.inputs),), -1, dtype=torch.long, device=indices.device)
            new_atom[atoms] = torch.arange(len(atoms), device=indices.device)
            sub.jacobians = self.jacobians.renumber(new_position, new_atom)
        return sub

    def batches(self, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Mini-batches of structure indices in a random order, a parent always in the same batch as its
        derived structures (so the parent–child term sees every pair): whole parent groups, shuffled, are
        taken until the next would overfill the batch (a group larger than ``batch_size`` is a batch of its
        own). Without derived structures this is a plain shuffle into ``batch_size`` pieces."""
        n = len(self)
        group = torch.where(self.parent >= 0, self.parent, torch.arange(n, device=self.parent.device))
        order = torch.randperm(n, generator=generator).to(group.device)   # the groups' order: their roots'
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=order.device)
        members = torch.argsort(rank[group] * n + rank, stable=True)    # group by group, members in order
        sizes = torch.bincount(group, minlength=n)[group[members]]
        starts = torch.ones(n, dtype=torch.bool, device=group.device)
        starts[1:] = group[members][1:] != group[members][:-1]
        batches, current, filled = [], [], 0
        for k in torch.nonzero(starts).squeeze(1).tolist():
            size = int(sizes[k])
            if current and filled + size > batch_size:
                batches.append(torch.cat(current))
                current, filled = [], 0
            current.append(members[k:k + size])
            filled += size
        if current:
            batches.append(torch.cat(current))
        return batches

    def concat(self, other: FeatureSet) -> FeatureSet:
        """This set followed by ``other``, whose parent links point into this set (freshly derived
        structures of this set's originals, built with ``parents=``)."""
        shift = len(self)
        joined = FeatureSet(**{name: torch.cat([getattr(self, name), getattr(other, name)])
                               for name in ("inputs", "species_index", "n_atoms", "reference_sum", "energy",
                                            "weight", "forces", "derived", "parent")},
                            structure_index=torch.cat([self.structure_index, other.structure_index + shift]))
        shifted = other.jacobians and other.jacobians.renumber(
            torch.arange(len(other), device=other.n_atoms.device) + shift,
            torch.arange(len(other.inputs), device=other.n_atoms.device) + len(self.inputs))
        joined.jacobians = (shifted if self.jacobians is None else self.jacobians if shifted is None
                            else self.jacobians.joined(shifted))
        return joined


@dataclass
class Outputs:
    """Predicted total energies (B,), and the forces on the atoms of ``data.jacobians`` when asked."""

    energies: torch.Tensor
    forces: torch.Tensor | None = None


def evaluate(potential, data: FeatureSet, forces: bool = False, create_graph: bool = False) -> Outputs:
    """Energies from the stored features; forces through the stored Jacobians, F = −(dG/dR)ᵀ ∂E/∂G.

    With ``create_graph`` the forces stay differentiable in the weights (for a force loss): autograd
    then differentiates the tiny networks twice, never the descriptor.
    """
    with torch.set_grad_enabled(forces or torch.is_grad_enabled()):
        return _evaluate(potential, data, forces, create_graph)


def _evaluate(potential, data: FeatureSet, forces: bool, create_graph: bool) -> Outputs:
    inputs = []
    summed = data.energy.new_zeros(len(data))
    for k, (rows, x, owner) in enumerate(data.by_species):
        if forces:
            x = x.detach().requires_grad_(True)
        inputs.append(x)
        if len(rows):
            summed = summed.index_add(0, owner, potential.networks.nets[k](x).squeeze(1))
    energies = data.reference_sum + potential.energy_shift * data.n_atoms + potential.energy_scale * summed
    result = Outputs(energies)
    if forces and data.jacobians is not None:
        grads = torch.autograd.grad(summed.sum(), inputs, create_graph=create_graph, allow_unused=True)
        v = data.inputs.new_zeros(data.inputs.shape)
        for k, ((rows, _, _), g) in enumerate(zip(data.by_species, grads)):
            if g is not None:
                v = v.index_copy(0, rows, potential.energy_scale * g / potential.feature_scale[k])
        result.forces = data.jacobians.forces(v)
    return result


#: How the network output is scaled to per-atom cohesive energies (``fit_normalization``).
def fit_normalization(potential, structures: Sequence[Structure], features: Sequence[torch.Tensor],
                      energy: str = "range") -> None:
    """Set the potential's feature (per species mean/std) and energy normalisation from training data, as
    aenet scales its inputs and targets before training. ``energy = "range"`` is aenet's (trainset.f90,
    ts_energy_norm_simple): shift = midpoint, scale = half the range of the per-atom cohesive energies, so
    the targets lie in [−1, 1]; ``"std"``: their mean and standard deviation."""
    lookup = {s: k for k, s in enumerate(potential.species)}
    raw = torch.cat(list(features)).to(potential.device)
    species_index = torch.tensor([lookup[sym] for s in structures for sym in s.symbols], device=raw.device)
    with torch.no_grad():
        for k in range(len(potential.species)):
            x = raw[species_index == k]
            if len(x) == 0:
                continue
            std = x.std(dim=0, unbiased=False) if len(x) > 1 else torch.ones_like(x[0])
            potential.feature_shift[k] = x.mean(dim=0)
            potential.feature_scale[k] = torch.where(std > 1e-10 * (1 + x.abs().amax(dim=0)), std,
                                                     torch.ones_like(std))
        references = potential.reference_energies()
        per_atom = torch.tensor([cohesive_per_atom(s, references) for s in structures], dtype=torch.float64)
        if energy == "range":
            low, high = float(per_atom.min()), float(per_atom.max())
            shift, scale = (high + low) / 2, (high - low) / 2
        else:
            shift, scale = float(per_atom.mean()), float(per_atom.std(unbiased=False)) if len(per_atom) > 1 else 0.0
        potential.energy_shift.fill_(shift)
        potential.energy_scale.fill_(max(scale, 1e-4))
