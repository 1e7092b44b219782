"""Taylor-expansion augmentation: derived structures with first-order energies, in memory or on disk.

The face of the package only re-exports: the settings live in ``settings.py``, the moves and labels in
``derive.py``, the strategies in ``strategies.py``, ``pyita augment`` in ``run.py``."""

from pyita.augment.derive import (augment, describe, iter_augmented, iter_moves, moves_for, shortfall_message,
                                  why_nothing_made)
from pyita.augment.run import OutputOptions, run_augment
from pyita.augment.settings import AugmentSettings
from pyita.choices import STRATEGIES
from pyita.augment.taylor import taylor_energy

__all__ = ["AugmentSettings", "augment", "iter_augmented", "iter_moves", "moves_for", "describe", "taylor_energy",
           "shortfall_message", "why_nothing_made", "STRATEGIES", "run_augment", "OutputOptions"]
