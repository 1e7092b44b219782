"""Simulated paired trials of known structure, thousands at a time: the noise model of the calibration tests.

A trial draws a trial effect shared by every condition (same subset, same test parents: correlated conditions),
a training-run effect per condition (what differs between two trainings: heavy-ish tailed, Student t with 4
degrees of freedom), and test structures with a difficulty shared by all conditions plus their own noise per
condition. Errors are log-normal, so per-structure errors are skewed as real ones are. A condition's true
effect multiplies all its errors by exp(effect), so the true mean of a per-trial log-MAE difference is the
difference of the effects (every other term is symmetric and shared in distribution).

Used by tests/test_calibration.py (one condition against a baseline) and tests/test_recommend_calibration.py
(whole races among several recipes).
"""

from __future__ import annotations

import numpy as np

STRUCTURES = 40           # test structures per trial (the quick preset has 37)

#: Two regimes measured on the bundled sample (quick and aa presets): force errors per structure vary
#: little between two trainings (log ratio SD ≈ 0.1) and the between-trial scatter of the per-trial
#: difference is 2–6× its within-trial standard error; energy errors per structure vary a lot (log ratio
#: SD ≈ 1.6) and the between-trial scatter is ≈ 1.2–1.7× the within-trial one.
SCENARIOS = {"forces-like": {"run_sd": 0.03, "noise_sd": 0.07}, "energy-like": {"run_sd": 0.15, "noise_sd": 1.1}}


def simulate_errors(rng: np.random.Generator, n_experiments: int, n_trials: int, effects, trial_sd: float = 0.3,
                    run_sd: float = 0.03, structure_sd: float = 1.0, noise_sd: float = 0.07,
                    dtype=np.float64) -> np.ndarray:
    """Per-structure absolute errors of each condition, shape (conditions, experiments, trials, structures);
    ``effects`` holds one log-scale effect per condition. ``dtype=np.float32`` halves the time of big runs."""
    effects = np.asarray(effects, dtype=dtype)
    shape = (n_experiments, n_trials)
    trial = rng.normal(0, trial_sd, shape)[..., None].astype(dtype)             # shared by all conditions
    run = (run_sd * rng.standard_t(4, (len(effects), *shape))[..., None]).astype(dtype)   # one training run each
    difficulty = dtype(structure_sd) * rng.standard_normal((*shape, STRUCTURES), dtype)   # same test structures
    noise = dtype(noise_sd) * rng.standard_normal((len(effects), *shape, STRUCTURES), dtype)
    log_errors = dtype(np.log(0.5)) + trial + difficulty + run + noise
    log_errors += effects[:, None, None, None]
    return np.exp(log_errors, out=log_errors)


def simulate_mae(rng: np.random.Generator, n_experiments: int, n_trials: int, effects, **settings) -> np.ndarray:
    """Per-trial MAEs of each condition, shape (conditions, experiments, trials)."""
    return simulate_errors(rng, n_experiments, n_trials, effects, **settings).mean(-1)
