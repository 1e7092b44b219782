"""Taylor-expansion augmentation: derived structures with first-order energies, in memory or on disk."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from pyita.augment.derive import (describe, iter_augmented, iter_moves, moves_for, shortfall_message,
                                  why_nothing_made)
from pyita.augment.strategies import STRATEGIES
from pyita.augment.taylor import taylor_energy
from pyita.errors import PyitaError
from pyita.structure import Structure

__all__ = ["AugmentSettings", "augment", "iter_augmented", "iter_moves", "moves_for", "describe", "taylor_energy",
           "shortfall_message", "why_nothing_made", "STRATEGIES"]

#: Above this δ (Å) the first-order label is usually poor; see ``pyita check`` to measure it.
LARGE_DELTA = 0.1
ABSURD_DELTA = 1.0


@dataclass(frozen=True)
class AugmentSettings:
    """Everything that decides the derived structures; recorded in every manifest."""

    a: float
    delta: float
    strategy: str = "balanced"
    seed: int = 0
    max_force: float | None = None
    cap: float = 3.0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise PyitaError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not self.a > 0:
            raise PyitaError(f"a (new structures per parent) must be > 0, got {self.a:g}: " + (
                "a = 0 would make no derived structure" if self.a == 0 else "a count is ≥ 0, and 0 makes none"))
        # a = inf overflows the per-parent counts; an infinite δ, force limit or cap means nothing
        for name, value in (("a", self.a), ("delta", self.delta), ("max-force", self.max_force), ("cap", self.cap)):
            if value is not None and not math.isfinite(value):
                raise PyitaError(f"{name} must be a finite number, got {value}")
        if not self.delta > 0:
            raise PyitaError(f"delta must be > 0 Å, got {self.delta}")
        if self.delta > ABSURD_DELTA:
            raise PyitaError(f"delta {self.delta} Å is far beyond first-order validity (max {ABSURD_DELTA} Å)")
        if self.delta > LARGE_DELTA:
            warnings.warn(f"delta {self.delta} Å is large: first-order Taylor labels degrade as δ²; "
                          "measure with `pyita check`", stacklevel=3)
        if self.max_force is not None and not self.max_force > 0:
            raise PyitaError(f"max-force must be > 0 eV/Å, got {self.max_force}")
        if not self.cap >= 1:
            raise PyitaError(f"cap must be ≥ 1 (in units of δ), got {self.cap}")

    def as_dict(self) -> dict:
        return asdict(self)


def augment(parents: Sequence[Structure], a: float, delta: float, strategy: str = "balanced", seed: int = 0,
            max_force: float | None = None, exclude: Iterable[int] = (), cap: float = 3.0) -> list[Structure]:
    """Derived structures of ``parents`` (nothing touches disk). Each has the Taylor energy, no force
    labels, and ``info`` linking it to its parent (``info["parent"]`` is the index in ``parents``).

    ``a = 0`` gives none (where ``AugmentSettings``, which the command line uses, refuses it): callers such as
    the trainer and experiment sweeps use it to mean "no augmentation".
    """
    if a == 0:  # no augmentation, as `pyita train --augment-a 0` or a = 0 in an experiment's sweep mean
        return []
    settings = AugmentSettings(a=a, delta=delta, strategy=strategy, seed=seed, max_force=max_force, cap=cap)
    excluded = set(exclude)
    n = sum(1 for k in range(len(parents)) if k not in excluded)
    return [d for _, _, derived in iter_augmented(parents, settings, n, excluded) for d in derived]
