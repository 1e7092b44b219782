"""The embedded trainer as an experiment backend: one condition's settings in, raw test errors out.

Translates an experiment condition (its trainer table and augmentation) into ``TrainSettings``, fits with
``pyita.train.fit.train`` and predicts the test structures; ``pyita.backends.aenet`` does the same with aenet.
"""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Sequence

import numpy as np

from pyita.augment.settings import AugmentSettings
from pyita.backends.condition import ConditionResult
from pyita.errors import PyitaError
from pyita.predict import predict
from pyita.reference import total_energy
from pyita.structure import Structure
from pyita.train.data import split_by_parent, take
from pyita.train.fit import train
from pyita.train.settings import TrainSettings

__all__ = ["train_and_evaluate", "train_settings"]

#: Experiment-config names that differ from TrainSettings' own.
_TRAINER_ALIASES = {"early_stopping": "patience"}
#: The keys of a condition's augment table that are training settings (by their record names); the others are
#: AugmentSettings'.
AUGMENT_TRAINING_KEYS = {"on_the_fly": "on_the_fly", "weight": "derived_weight",
                          "parent_child_weight": "parent_child_weight"}


def train_and_evaluate(parents: Sequence[Structure], derived: Sequence[Structure], test: Sequence[Structure],
                       trainer: dict, augment: dict | None = None, seed: int = 0,
                       reference_energies: dict[str, float] | None = None, validation_fraction: float = 0.0,
                       progress: bool = False, init_seed_offset: int = 0) -> dict:
    """One experiment condition: train on parents (+ fixed derived structures), evaluate on ``test``.

    ``trainer`` holds TrainSettings' record keys (``early_stopping`` = patience, with a 10 % validation split
    unless ``validation_fraction`` is given there or here); ``augment`` the condition's
    augmentation (a, delta, strategy, max_force, on_the_fly, weight). Fixed derived structures come in
    ``derived``; on-the-fly ones are drawn here. A validation split (by parent, from ``parents``) is
    taken when ``validation_fraction`` > 0. ``init_seed_offset`` ≠ 0 starts from other initial weights
    (seed + offset) and changes nothing else: the validation split, batches and on-the-fly draws keep
    ``seed``. Returns the history and raw test errors: total energies
    (eV) predicted and referenced, atom counts, and per-component force errors (eV/Å).
    """
    settings, validation_fraction = train_settings(trainer, augment, seed, init_seed_offset, validation_fraction)
    structures = list(parents) + list(derived)
    keep, held, _ = split_by_parent(structures, 0.0, validation_fraction, seed)
    train_set, validation = take(structures, keep), take(structures, held)
    result = train(train_set, validation, settings, test=list(test), reference_energies=reference_energies,
                   progress=progress)
    predictions = predict(result.potential, list(test))
    references = result.potential.reference_energies()
    return ConditionResult(
        energy_ref=np.array([total_energy(s, references) for s in test]),
        energy_pred=np.array([p.energy for p in predictions]),
        n_atoms=np.array([len(s) for s in test]),
        force_errors=np.concatenate([(p.forces - s.forces).ravel() for s, p in zip(test, predictions)
                                     if s.forces is not None] or [np.zeros(0)]),
        history=result.history, seconds=result.seconds, potential=result.potential,
        **_training_errors(result.history, result.potential.metadata["best_epoch"]))


def train_settings(trainer: dict, augment: dict | None = None, seed: int = 0, init_seed_offset: int = 0,
                   validation_fraction: float = 0.0) -> tuple[TrainSettings, float]:
    """The ``TrainSettings`` of one condition, and its validation fraction; raises on a setting the embedded
    trainer does not know or cannot use (the experiment config calls it too, before anything is written)."""
    fields = {_TRAINER_ALIASES.get(k, k): v for k, v in trainer.items()}
    validation_fraction = fields.pop("validation_fraction", validation_fraction)
    if fields.get("patience") is not None and not validation_fraction:
        validation_fraction = 0.1  # early stopping needs something to watch
    augment = dict(augment or {})
    unsupported = sorted(set(augment) - {*AUGMENT_TRAINING_KEYS, *AugmentSettings.__dataclass_fields__})
    if unsupported:
        raise PyitaError(f"augmentation options {unsupported} are not supported by the embedded trainer")
    on_the_fly = augment.pop("on_the_fly", False)
    fields.update({AUGMENT_TRAINING_KEYS[k]: augment[k] for k in AUGMENT_TRAINING_KEYS if k in augment})
    settings = TrainSettings.from_flat(**{**fields, "seed": seed,
                                          **({"init_seed": seed + init_seed_offset} if init_seed_offset else {})})
    if on_the_fly:   # drawn here; fixed derived structures arrive made, and only their loss weights apply here
        settings = replace(settings, augment=AugmentSettings.from_table(augment, seed), on_the_fly=True)
    return settings, validation_fraction


def _training_errors(history: list[dict], best_epoch: int) -> dict:
    """The training-set energy errors of the epoch whose weights were kept (the best one under early
    stopping, else the last)."""
    rows = [row for row in history if row["epoch"] == best_epoch] or history[-1:]
    return {"train_energy_mae": rows[0]["train_mae"], "train_energy_rmse": rows[0]["train_rmse"]} if rows else {}
