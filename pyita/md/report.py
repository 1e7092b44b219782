"""What ``pyita md`` leaves in its output folder: summary.json, runs.csv (one row per run), the trajectories
(extxyz, as streamed), the logs (CSV) and, with a reference calculator, reference.csv."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from pyita.io.records import json_text
from pyita.io.tables import write_csv
from pyita.md.engine import LOGS, TRAJECTORIES, log_columns
from pyita.md.reference import REFERENCE_COLUMNS
from pyita.md.state import Run

RUN_COLUMNS = ("run", "start", "source", "replica", "n_atoms", "stable", "failure", "time_to_failure_fs",
               "simulated_fs", "drift_meV_per_atom", "max_abs_drift_meV_per_atom", "mean_temperature_K",
               "energy_mae_meV_per_atom", "force_mae_eV_per_A")


def run_record(run: Run, settings, errors: dict | None) -> dict:
    """One run's entry in summary.json."""
    failure = run.failure or {}
    return {"run": run.name, "start": run.start, "source": run.source, "replica": run.replica, "seed": run.seed,
            "n_atoms": run.n_atoms, "stable": run.failure is None, "failure": failure.get("criterion"),
            "failure_detail": failure.get("detail"), "time_to_failure_fs": failure.get("time_fs"),
            "simulated_fs": round(run.step * settings.timestep, 9), "drift_meV_per_atom": run.drift_now,
            "max_abs_drift_meV_per_atom": run.max_abs_drift, "mean_temperature_K": run.mean_temperature,
            "trajectory": f"{TRAJECTORIES}/{run.name}.extxyz", "log": f"{LOGS}/{run.name}.csv",
            **({"reference": errors} if errors is not None else {})}


def totals(runs: list[Run], settings) -> dict:
    """Over all runs: how many stayed stable, and the median time to failure with stable runs counted at the
    run's length (censored: a lower bound when any run was stable)."""
    length = settings.steps * settings.timestep
    times = [run.failure["time_fs"] if run.failure else length for run in runs]
    stable = sum(run.failure is None for run in runs)
    return {"runs": len(runs), "stable": stable, "fraction_stable": stable / len(runs),
            "median_time_to_failure_fs": float(np.median(times)), "run_length_fs": length,
            "failures": {c: sum(1 for run in runs if run.failure and run.failure["criterion"] == c)
                         for c in sorted({run.failure["criterion"] for run in runs if run.failure})}}


def write_md(folder: Path, partial: Path, runs: list[Run], summary: dict, species, reference_rows) -> None:
    """Fill the output ``folder`` from the working folder ``partial`` and the summary."""
    (folder / TRAJECTORIES).mkdir()
    (folder / LOGS).mkdir()
    for run in runs:
        shutil.copyfile(partial / TRAJECTORIES / f"{run.name}.extxyz", folder / TRAJECTORIES / f"{run.name}.extxyz")
        with open(partial / LOGS / f"{run.name}.jsonl") as handle:
            rows = [json.loads(line) for line in handle]
        write_csv(folder / LOGS / f"{run.name}.csv", rows, log_columns(run, species))
    rows = []
    for record in summary["runs"]:
        errors = record.get("reference") or {}
        rows.append({**{k: record.get(k) for k in RUN_COLUMNS if k in record},
                     "energy_mae_meV_per_atom": errors.get("energy_mae_meV_per_atom"),
                     "force_mae_eV_per_A": errors.get("force_mae_eV_per_A")})
    write_csv(folder / "runs.csv", [{k: ("" if v is None else v) for k, v in row.items()} for row in rows],
              RUN_COLUMNS)
    if reference_rows is not None:
        write_csv(folder / "reference.csv", reference_rows, REFERENCE_COLUMNS)
    (folder / "summary.json").write_text(json_text(summary, indent=2))


def describe(summary: dict) -> list[str]:
    """The console's account of a finished study: stability, then each failed run."""
    t = summary["totals"]
    lines = [f"{t['stable']} of {t['runs']} runs stable for {t['run_length_fs']:g} fs; median time to failure "
             f"{t['median_time_to_failure_fs']:g} fs" + (" (censored at the run length)" if t["stable"] else "")]
    for record in summary["runs"]:
        if not record["stable"]:
            lines.append(f"  {record['run']} ({record['source']}): {record['failure']} at "
                         f"{record['time_to_failure_fs']:g} fs: {record['failure_detail']}")
        errors = record.get("reference")
        if errors and errors["frames"]:
            first, last = errors["first"], errors["last"]
            lines.append(f"  {record['run']}: force MAE against the reference {first['force_mae_eV_per_A']:.3f} eV/Å "
                         f"at step {first['step']} → {last['force_mae_eV_per_A']:.3f} at step {last['step']} "
                         f"(mean {errors['force_mae_eV_per_A']:.3f}); energy MAE "
                         f"{errors['energy_mae_meV_per_atom']:.1f} meV/atom")
    nve = [r["max_abs_drift_meV_per_atom"] for r in summary["runs"] if math.isfinite(r["max_abs_drift_meV_per_atom"])]
    if summary["settings"]["ensemble"] == "nve" and nve:
        lines.append(f"largest |NVE drift| {max(nve):.3f} meV/atom")
    return lines
