"""Loss terms, summed by the trainer. Each is a small callable on (outputs, data), so new terms (e.g. the
parent–child Taylor loss of issue 7, which can use ``data.parent``) join without touching the trainer.

Errors are divided by a scale taken from the training data (σ of per-atom energies, RMS of force
components), so the terms are dimensionless and ``weight`` is a plain relative weight.
"""

from __future__ import annotations

import torch

from pyita.train.data import FeatureSet, Outputs


class EnergyLoss:
    """Weighted mean squared per-atom energy error, in units of ``scale`` (eV/atom)."""

    name = "energy"
    needs_forces = False

    def __init__(self, scale: float, weight: float = 1.0):
        self.scale, self.weight = scale, weight

    def __call__(self, outputs: Outputs, data: FeatureSet) -> torch.Tensor:
        error = (outputs.energies - data.energy) / data.n_atoms / self.scale
        return self.weight * (data.weight * error * error).sum() / data.weight.sum()


class ForceLoss:
    """Mean squared force-component error over structures with force labels, in units of ``scale`` (eV/Å),
    each structure counted with its sample weight."""

    name = "forces"
    needs_forces = True

    def __init__(self, scale: float, weight: float):
        self.scale, self.weight = scale, weight

    def __call__(self, outputs: Outputs, data: FeatureSet) -> torch.Tensor:
        if outputs.forces is None:
            return data.energy.new_zeros(())
        return self.part(outputs, data, self.count(data))

    @staticmethod
    def count(data: FeatureSet) -> torch.Tensor:
        """What the squared errors are divided by: 3 × the summed weights of the atoms whose forces count."""
        return 3 * data.weight[data.structure_index[data.jacobians.atoms]].sum()

    def part(self, outputs: Outputs, data: FeatureSet, count: torch.Tensor) -> torch.Tensor:
        """The term's share from ``data``, a chunk of a set whose :meth:`count` is ``count``: the shares of a set's
        chunks add up to the term on the whole set (streamed L-BFGS, ``Trainer._streamed_loss``)."""
        atoms = data.jacobians.atoms
        error = (outputs.forces - data.forces[atoms]) / self.scale
        w = data.weight[data.structure_index[atoms]]
        return self.weight * (w * (error * error).sum(dim=1)).sum() / count if count > 0 else count


class ParentChildLoss:
    """Taylor consistency of each derived structure with its parent (issue 7).

    The label difference E_child − E_parent is exactly −F·D by construction, so the term
    ((E_model(R + D) − E_model(R)) − (−F·D)) / N is free of the model's error on the parent, which cancels;
    for small D it is ((F − F_model)·D)/N, a force error projected on D that needs only forward passes.
    Errors are in units of ``scale`` (RMS of the per-atom Taylor shifts in the training data), so
    ``weight`` = 1 weighs a relative error of the difference like a σ-sized energy error.
    """

    name = "parent_child"
    needs_forces = False

    def __init__(self, scale: float, weight: float):
        self.scale, self.weight = scale, weight

    @staticmethod
    def pairs(data: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
        child = torch.nonzero(data.parent >= 0).squeeze(1)
        return child, data.parent[child]

    @classmethod
    def for_data(cls, data: FeatureSet, weight: float) -> ParentChildLoss:
        child, parent = cls.pairs(data)
        if not len(child):
            raise ValueError("no derived structure with its parent in the training set")
        shift = (data.energy[child] - data.energy[parent]) / data.n_atoms[child]
        return cls(float(torch.sqrt(torch.mean(shift * shift))) or 1.0, weight)

    def __call__(self, outputs: Outputs, data: FeatureSet) -> torch.Tensor:
        child, parent = self.pairs(data)
        if not len(child):
            return data.energy.new_zeros(())
        model = outputs.energies[child] - outputs.energies[parent]
        label = data.energy[child] - data.energy[parent]
        error = (model - label) / data.n_atoms[child] / self.scale
        return self.weight * torch.mean(error * error)
