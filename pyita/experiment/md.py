"""Molecular dynamics in an experiment (the ``[md]`` table): every trained condition of a trial runs the same
dynamics — the same starting structures (the trial's first ``starts`` test parents) and the same initial
velocities (seeded by the trial, not the condition) — so that the stability numbers pair across conditions as
the test errors do.

The table's keys are ``MDSettings``' (their defaults live there) plus ``reference`` (a calculator spec as
``pyita check`` takes, e.g. "gfn1-xtb"); only ``starts`` has its own default here, as an experiment must not
run every test parent. ``seed`` is added to the trial's seed for the velocities.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from pyita.errors import InputError, PyitaError
from pyita.md.settings import MDSettings

#: Starting structures per trial when the [md] table does not say.
STARTS = 4
#: The per-trial MD metrics: summary key → (metric name in comparisons, plain word, unit, higher is better).
MD_METRICS = {
    "md_stable_fraction": ("MD stable fraction", "MD stability", "", True),
    "md_median_time_to_failure_fs": ("MD median time to failure (fs)", "MD time to failure", "fs", True),
    "md_nve_drift_meV_atom": ("MD NVE drift (meV/atom)", "MD energy drift", "meV/atom", False),
    "md_energy_mae_meV_atom": ("MD trajectory energy MAE (meV/atom)", "MD trajectory energy", "meV/atom", False),
    "md_force_mae_eV_A": ("MD trajectory force MAE (eV/Å)", "MD trajectory forces", "eV/Å", False),
}


def md_settings(table: dict) -> tuple[MDSettings, str | None]:
    """The dynamics settings of an [md] table and its reference calculator spec (None: no reference)."""
    table = dict(table)
    reference = table.pop("reference", None)
    return MDSettings(**{"starts": STARTS, **table}), reference


def checked_md(table: dict, path) -> dict:
    """An [md] table's record (every setting, defaults filled in) for experiment.json, its values checked by
    ``MDSettings`` and the reference calculator resolved, before anything is written."""
    from pyita.check.calculators import resolve_calculator

    try:
        settings, reference = md_settings(table)
        if reference is not None:
            resolve_calculator(reference)
    except PyitaError as exc:
        raise InputError(f"[md]: {exc}", path) from None
    return {**settings.as_dict(), "reference": reference}


def md_metrics(config) -> list[str]:
    """The summary keys of the per-trial MD metrics an experiment's tasks record."""
    if not config.md:
        return []
    keys = ["md_stable_fraction", "md_median_time_to_failure_fs"]
    if config.md["ensemble"] == "nve":
        keys.append("md_nve_drift_meV_atom")
    if config.md.get("reference"):
        keys += ["md_energy_mae_meV_atom", "md_force_mae_eV_A"]
    return keys


def run_task_md(table: dict, potential, parents, test, trial_seed: int) -> tuple[dict, dict]:
    """MD of one trained condition: (summary entries, per-run arrays). ``potential`` None (a backend that
    keeps no model in memory) records why no MD ran."""
    from pyita.md.run import simulate

    settings, reference = md_settings(table)
    if potential is None:
        return {"md_skipped": "the backend returned no model in memory (aenet): no MD"}, {}
    starts = list(test)[:settings.starts]
    settings = replace(settings, seed=trial_seed + settings.seed, starts=None)
    done = simulate(potential, starts, settings, reference=reference, thresholds_from=parents)
    runs = done.runs
    length = settings.steps * settings.timestep
    times = np.array([run.failure["time_fs"] if run.failure else length for run in runs], dtype=float)
    stable = np.array([run.failure is None for run in runs], dtype=bool)
    summary = {"md_runs": len(runs), "md_run_length_fs": length, "md_seed": settings.seed,
               "md_starts": [s.source for s in starts],
               "md_stable_fraction": float(stable.mean()), "md_median_time_to_failure_fs": float(np.median(times)),
               "md_failures": {c: sum(1 for r in runs if r.failure and r.failure["criterion"] == c)
                               for c in sorted({r.failure["criterion"] for r in runs if r.failure})}}
    if settings.ensemble == "nve":
        drifts = [abs(run.drift_now) for run in runs]
        summary["md_nve_drift_meV_atom"] = float(np.median(drifts))
    if reference is not None:
        errors = [done.errors[run.name] for run in runs if done.errors[run.name]["frames"]]
        for key, name in (("md_energy_mae_meV_atom", "energy_mae_meV_per_atom"),
                          ("md_force_mae_eV_A", "force_mae_eV_per_A")):
            summary[key] = float(np.mean([e[name] for e in errors])) if errors else float("nan")
    return summary, {"md_time_to_failure_fs": times, "md_stable": stable}
