"""When a run has failed: checked after every step, in this order; the first criterion met stops the run and
is recorded with the time it happened.

A potential can have small test errors and still break in molecular dynamics, because MD visits states the
test set does not hold; stability is a metric of its own (Fu, Wu, Wang, Xie, Keten, Gómez-Bombarelli,
Jaakkola, "Forces are not enough: benchmark and critical evaluation for machine learning force fields with
molecular simulations", TMLR 2023, arXiv:2210.07237). Fu et al. call a simulation unstable when a bond length
departs from its equilibrium value by more than a fixed amount (0.5 Å for molecules) or the radial
distribution function drifts (condensed phases). The criteria here follow the bond-length idea, made relative
so that one default serves any material, and add the signs of a broken integration:

``non_finite``
    the energy or a force is NaN or infinite, or the neighbour search refuses the structure (atoms that
    coincide, positions that are no longer numbers).
``min_distance``
    a pair of atoms closer than ``min_distance_fraction`` (default 0.75) × the shortest distance of their
    species pair in the structures given to ``pyita md`` (all of them, not only the starts: give the training
    structures, or a sample of them, to measure against the training data). Thermal motion at a few hundred K
    shortens bonds by some 10 %; a quarter is a collapse (the failure the issue reports for an energy-only
    TiO2 model: Ti–O from 1.67 to 1.27 Å). A species pair that never comes within the model's cutoff in those
    structures is held only to the floor ``pyita.geometry.NEAR_DISTANCE`` (0.5 Å), which also bounds every
    other threshold from below.
``bond_stretch``
    an atom's nearest neighbour farther than ``max_bond_stretch`` (default 1.5) × its nearest-neighbour
    distance at the start: a bond broken, an atom evaporating (∞ when nothing is left within the cutoff).
``temperature``
    after the first 10 % of the steps, the kinetic temperature above ``max_temperature_factor`` (default 5) ×
    the reference temperature: the target, or the mean over those first steps when that is higher (a start
    far from equilibrium, or a run at 0 K), and never below ``TEMPERATURE_FLOOR``. A potential that pours
    energy into the atoms heats them far beyond what a thermostat or the start can explain.
``drift``
    NVE only: the total energy more than ``max_drift`` (default 10) meV/atom away from its start value. Velocity
    Verlet on a smooth potential at a 1 fs step keeps it within a fraction of a meV/atom; a model whose forces
    are not the gradient of its energy, or whose surface is rough, does not.
"""

from __future__ import annotations

import math

import numpy as np

from pyita.geometry import NEAR_DISTANCE

CRITERIA = ("non_finite", "min_distance", "bond_stretch", "temperature", "drift")
#: The temperature criterion's reference never goes below this (K): a run at 0 K from a relaxed structure
#: stays near 0 K, where any factor of its own noise would be a false alarm.
TEMPERATURE_FLOOR = 10.0


def distance_thresholds(shortest_seen: np.ndarray, fraction: float) -> np.ndarray:
    """The smallest allowed distance of each species pair: ``fraction`` × the shortest seen, not below the
    floor; the floor alone for a pair never seen within the cutoff."""
    seen = np.where(np.isfinite(shortest_seen), fraction * np.asarray(shortest_seen, dtype=float), NEAR_DISTANCE)
    return np.maximum(seen, NEAR_DISTANCE)


def reference_temperature(target: float, settle_mean: float) -> float:
    """What the temperature criterion compares against (see the module docstring)."""
    return max(target, settle_mean, TEMPERATURE_FLOOR)


def find_failure(settings, evaluation, *, pairs, thresholds, start_nearest, temperature, settled_mean,
                 drift) -> tuple[str, str] | None:
    """(criterion, what happened) for the first criterion the state after a step meets, else None.

    ``evaluation``: the model's energy, forces and geometry now (``pyita.md.evaluate.Evaluation``);
    ``start_nearest``: every atom's nearest-neighbour distance at the start; ``settled_mean``: the mean
    temperature over the first 10 % of the steps once they have passed, else None; ``drift``: meV/atom.
    """
    if evaluation.problem is not None:
        return "non_finite", evaluation.problem
    if not math.isfinite(evaluation.energy) or not np.isfinite(evaluation.forces).all():
        return "non_finite", "the model's energy or forces are not finite"
    below = evaluation.shortest < thresholds
    if below.any():
        k = int(np.argmax(thresholds - evaluation.shortest))
        return "min_distance", (f"{pairs[k].replace('_', '–')} distance {evaluation.shortest[k]:.3f} Å below "
                                f"{thresholds[k]:.3f} Å ({settings.min_distance_fraction:g} × the shortest in the "
                                "structures given)")
    with np.errstate(divide="ignore", invalid="ignore"):
        stretch = evaluation.nearest / start_nearest
    stretch[~np.isfinite(start_nearest)] = 0.0   # an atom alone at the start has no bond to stretch
    worst = int(np.argmax(stretch))
    if stretch[worst] > settings.max_bond_stretch:
        now = evaluation.nearest[worst]
        return "bond_stretch", (f"atom {worst + 1}'s nearest neighbour at "
                                f"{'beyond the cutoff' if not math.isfinite(now) else f'{now:.3f} Å'}, "
                                f"{settings.max_bond_stretch:g} × its start distance {start_nearest[worst]:.3f} Å "
                                "exceeded")
    if settled_mean is not None:
        limit = settings.max_temperature_factor * reference_temperature(settings.temperature, settled_mean)
        if temperature > limit:
            return "temperature", f"temperature {temperature:.0f} K above {limit:.0f} K"
    if settings.ensemble == "nve" and abs(drift) > settings.max_drift:
        return "drift", f"total energy drifted {drift:+.2f} meV/atom (limit ±{settings.max_drift:g})"
    return None
