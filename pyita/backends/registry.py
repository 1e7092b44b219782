"""Which trainers there are, and the one call that picks one by name (``experiment.backend``)."""


from __future__ import annotations

from collections.abc import Callable

from pyita.backends.condition import ConditionResult
from pyita.choices import BACKENDS
from pyita.errors import PyitaError


def get_backend(name: str) -> Callable[..., ConditionResult]:
    if name == "embedded":
        from pyita.backends.embedded import train_and_evaluate

        return train_and_evaluate
    if name == "aenet":
        from pyita.backends.aenet import experiment_backend

        return experiment_backend
    raise PyitaError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def check_settings(name: str, trainer: dict, augment: dict | None = None) -> None:
    """Raise PyitaError for trainer settings (or augmentation) that backend ``name`` cannot use: the same
    translation its training call makes, without training."""
    if name == "embedded":
        from pyita.backends.embedded import train_settings

        train_settings(trainer, augment)
    else:
        get_backend(name)
        from pyita.backends.aenet.experiment import aenet_settings

        aenet_settings(trainer)
