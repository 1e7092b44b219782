"""Trainers behind one call: ``get_backend(name)(parents=, derived=, test=, trainer=, augment=, seed=,
reference_energies=)`` returns a ``ConditionResult``: the raw test errors and the training history."""

from pyita.backends.condition import ConditionResult
from pyita.backends.registry import BACKENDS, check_settings, get_backend

__all__ = ["BACKENDS", "ConditionResult", "check_settings", "get_backend"]
