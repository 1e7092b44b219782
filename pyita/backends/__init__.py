"""Trainers behind one call: ``get_backend(name)(parents=, derived=, test=, trainer=, augment=, seed=,
reference_energies=)`` returns the raw test errors and the training history (see ``embedded``)."""

from __future__ import annotations

from typing import Callable

from pyita.errors import PyitaError

BACKENDS = ("embedded", "aenet")


def get_backend(name: str) -> Callable[..., dict]:
    if name == "embedded":
        from pyita.backends.embedded import train_and_evaluate

        return train_and_evaluate
    if name == "aenet":
        from pyita.backends.aenet import experiment_backend

        return experiment_backend
    raise PyitaError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
