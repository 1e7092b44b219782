"""The paired protocol: one subset and one test split per trial, shared by every condition.

Test structures are original parents only; augmentation (fixed files or on the fly) touches the training
parents of the trial and nothing else. Every condition of a trial starts from the same initial weights,
except a condition with ``init_seed_offset`` (an A/A check), which starts from the weights of seed
``model_seed + init_seed_offset`` and shares everything else.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from collections.abc import Sequence

import numpy as np

from pyita.augment import AugmentSettings, augment
from pyita.errors import PyitaError
from pyita.experiment.config import Condition, ExperimentConfig
from pyita.io import open_source
from pyita.reference import max_energy_mask, resolve_references
from pyita.structure import LabelKeys, Structure, held_out_without_copies


@dataclass
class TrialSplit:
    trial: int
    train: np.ndarray
    test: np.ndarray
    model_seed: int


@functools.lru_cache(maxsize=2)
def _read_pool(data: str, keys: LabelKeys) -> tuple[tuple[Structure, ...], tuple[tuple[str, float], ...]]:
    """The structures of ``data`` and the reference energies its generate.in names (TYPES; none otherwise)."""
    source = open_source(data, keys=keys)
    types = tuple(source.generate_in.types.items()) if source.generate_in is not None else ()
    return tuple(source), types


def load_pool(config: ExperimentConfig) -> tuple[list[Structure], dict[str, float]]:
    """All usable structures (after the MAXENERGY filter) and the reference energies used: the config's, else
    the input generate.in's TYPES, else fitted (the one rule of ``resolve_references``, as ``pyita train``)."""
    structures, types = _read_pool(config.data, config.label_keys)
    pool = list(structures)
    species = sorted({s for st in pool for s in st.symbols})
    reference = resolve_references(pool, species, config.reference_energies, dict(types), warn=False).energies
    if config.max_energy is not None:
        keep = max_energy_mask(pool, reference, config.max_energy)
        pool = [s for s, k in zip(pool, keep) if k]
    if len(pool) < 4:
        raise PyitaError(f"only {len(pool)} structures left in {config.data}; need at least 4")
    return pool, reference


def trial_split(pool: Sequence[Structure], config: ExperimentConfig, trial: int) -> TrialSplit:
    """Seeded subset and test parents of one trial; identical for every condition and backend. A test
    structure that is a copy of one in training (the data held it twice) is left out of the test set."""
    n_pool = len(pool)
    rng = np.random.default_rng([config.seed, trial])
    size = n_pool if config.subset_size is None else min(config.subset_size, n_pool)
    subset = np.sort(rng.choice(n_pool, size=size, replace=False))
    n_test = max(1, int(round(config.test_fraction * size)))
    test = np.sort(rng.choice(subset, size=n_test, replace=False))
    train = np.setdiff1d(subset, test)
    test = np.array(held_out_without_copies(pool, train.tolist(), test.tolist())[0], dtype=np.int64)
    return TrialSplit(trial, train, test, model_seed=int(rng.integers(2**31)))


def derived_for(condition: Condition, parents: list[Structure], seed: int) -> list[Structure]:
    """Derived structures of a condition's augmentation (fixed ones, or one draw of the on-the-fly kind)."""
    aug = condition.augment
    if not aug or aug["a"] == 0:   # a = 0 in a sweep: no augmentation
        return []
    return augment(parents, **AugmentSettings.from_table(aug, seed).as_dict())


def taylor_signal(derived: list[Structure]) -> float | None:
    """Median |F·D| / N of derived structures in meV/atom: what a derived label adds to its parent's."""
    if not derived:
        return None
    return float(np.median([abs(d.info["taylor_shift"]) / len(d) for d in derived]) * 1000.0)
