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
        total = data.energy.new_zeros(())
        count = data.energy.new_zeros(())
        for n, predicted in outputs.forces.items():
            idx, atoms, _ = data.jacobians[n]
            error = (predicted - data.forces[atoms]) / self.scale
            w = data.weight[idx]
            total = total + (w * (error * error).sum(dim=(1, 2))).sum()
            count = count + 3 * n * w.sum()
        return self.weight * total / count if count > 0 else total
