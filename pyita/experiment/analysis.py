"""From saved task results to tables: per-trial metrics, pooled summaries and condition-vs-baseline tests."""

from __future__ import annotations

import numpy as np

from pyita.experiment.config import ExperimentConfig
from pyita.experiment.stats import compare, summarize


def complete_trials(config: ExperimentConfig, results) -> list[int]:
    """Trials in which every condition finished: only these enter paired comparisons."""
    return [t for t in range(config.trials) if all((t, c.name) in results for c in config.conditions)]


def per_trial_table(config: ExperimentConfig, results) -> list[dict]:
    rows = []
    for (trial, name), r in sorted(results.items()):
        e, f = summarize(r.energy_errors), summarize(r.force_errors)
        rows.append({"trial": trial, "condition": name, "energy_mae": e["mae"], "energy_rmse": e["rmse"],
                     "energy_median": e["median"], "force_mae": f["mae"], "force_rmse": f["rmse"],
                     "force_median": f["median"], "seconds": r.summary["seconds"],
                     "n_train_parents": r.summary["n_train_parents"], "n_derived": r.summary["n_derived"],
                     "n_test": r.summary["n_test"]})
    return rows


def pooled(config: ExperimentConfig, results, trials: list[int], name: str, kind: str) -> np.ndarray:
    """Errors of one condition over the given trials, concatenated in a fixed (paired) order."""
    parts = [getattr(results[(t, name)], f"{kind}_errors") for t in trials if (t, name) in results]
    return np.concatenate(parts) if parts else np.array([])


def condition_table(config: ExperimentConfig, results) -> list[dict]:
    """Pooled error statistics per condition (meV/atom for energies, eV/Å for forces)."""
    trials = list(range(config.trials))
    rows = []
    for condition in config.conditions:
        e = summarize(pooled(config, results, trials, condition.name, "energy"))
        f = summarize(pooled(config, results, trials, condition.name, "force"))
        secs = [r.summary["seconds"] for (t, n), r in results.items() if n == condition.name]
        rows.append({"condition": condition.name, "trials": len(secs),
                     **{f"energy_{k}": v for k, v in e.items()}, **{f"force_{k}": v for k, v in f.items()},
                     "seconds_mean": float(np.mean(secs)) if secs else float("nan")})
    return rows


def baseline_for(config: ExperimentConfig, condition) -> str:
    """The baseline a condition is compared with: the one trained for as many iterations, else the first."""
    baselines = [c for c in config.conditions if c.is_baseline]
    length = condition.trainer.get("iterations")
    same = [c for c in baselines if c.trainer.get("iterations") == length]
    return (same or baselines)[0].name


def comparisons(config: ExperimentConfig, results) -> list[dict]:
    """Each condition against its baseline, on per-trial energy MAE and force MAE, complete trials only."""
    trials = complete_trials(config, results)
    out = []
    for condition in config.conditions:
        if condition.is_baseline or not trials:
            continue
        base = baseline_for(config, condition)
        for kind, metric in (("energy", "energy MAE (meV/atom)"), ("force", "force MAE (eV/Å)")):
            b = [float(np.mean(np.abs(getattr(results[(t, base)], f"{kind}_errors")))) for t in trials]
            c = [float(np.mean(np.abs(getattr(results[(t, condition.name)], f"{kind}_errors")))) for t in trials]
            bp = np.concatenate([results[(t, base)].structure_errors(kind) for t in trials])
            cp = np.concatenate([results[(t, condition.name)].structure_errors(kind) for t in trials])
            row = compare(condition.name, metric, b, c, bp, cp, seed=config.seed).as_dict()
            out.append({"baseline": base, **row})
    return out
