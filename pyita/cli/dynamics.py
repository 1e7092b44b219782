"""Molecular dynamics with a trained model (md). The settings' defaults live in ``pyita.md.settings``; an
option left out takes that default."""

from __future__ import annotations

from pathlib import Path

import typer

from pyita.cli.app import (CALC_HELP, DEVICE_OPTION, FOLD_OPTION, LOG_FILE, QUIET, VERBOSE, Ensemble, app, console,
                           done)
from pyita.md.settings import CHECKPOINT_EVERY, default


def _setting(help_text: str, name: str, unit: str = ""):
    return typer.Option(None, help=f"{help_text} \\[default: {default(name)}{unit}]")


@app.command()
def md(
    model: Path = typer.Argument(..., help="Model file written by `pyita train`, or a folder of aenet .nn files."),
    data: list[str] = typer.Argument(..., help="Starting structures (any DATA that predict accepts, e.g. "
                                               "sample:tio2-md); their shortest distances set the collapse limit."),
    temperature: float | None = _setting("Temperature, K: the initial velocities and the thermostat's target.",
                                         "temperature"),
    steps: int | None = _setting("Time steps per run.", "steps"),
    timestep: float | None = _setting("Time step, fs (≤ 10).", "timestep"),
    ensemble: Ensemble | None = _setting("Ensemble: nve (velocity Verlet) or nvt (Langevin, BAOAB).", "ensemble"),
    friction: float | None = _setting("NVT: Langevin friction, 1/fs.", "friction"),
    write_every: int | None = _setting("Steps between trajectory frames and log rows.", "write_every"),
    replicas: int | None = _setting("Runs per starting structure (other velocities and noise).", "replicas"),
    starts: int | None = typer.Option(None, help="Start from this many structures, evenly spaced through "
                                                 "DATA. \\[default: all]"),
    seed: int | None = _setting("Seed of the velocities and the thermostat's noise.", "seed"),
    min_distance_fraction: float | None = _setting(
        "Failure: a pair closer than this × the shortest distance of its species pair in DATA.",
        "min_distance_fraction"),
    max_bond_stretch: float | None = _setting("Failure: a nearest neighbour farther than this × its start distance.",
                                              "max_bond_stretch"),
    max_temperature_factor: float | None = _setting("Failure: a temperature above this × the target.",
                                                    "max_temperature_factor"),
    max_drift: float | None = _setting("Failure (NVE): total energy drift beyond this, meV/atom.", "max_drift"),
    reference: str | None = typer.Option(None, "--reference", help="Relabel trajectory frames with this calculator "
                                                                   "and report the model's errors along them. "
                                                                   + CALC_HELP),
    reference_every: int | None = _setting("With --reference: every k-th trajectory frame.", "reference_every"),
    calc_kwargs: str | None = typer.Option(None, "--calc-kwargs", help="JSON keyword arguments for --reference."),
    fold: str = FOLD_OPTION,
    device: str = DEVICE_OPTION,
    checkpoint_every: int | None = typer.Option(None, help="Steps between checkpoints in OUT.partial/. "
                                                           f"\\[default: {CHECKPOINT_EVERY}]"),
    out: Path = typer.Option(Path("md"), "--out", "-o", help="Output folder (must be new or empty)."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in OUT.partial/ (same inputs and "
                                            "settings)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only) and "
                                               "discard an interrupted run's OUT.partial/."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Run molecular dynamics with a trained model and report how long each run stays physical.

    Every starting structure (× replicas) runs batched through the model together; each run stops at its first
    failure (collapse, broken bond, runaway temperature, NVE drift, non-finite numbers). Resumable (--resume).
    Writes summary.json, runs.csv, trajectories/, logs/ and, with --reference, reference.csv."""
    from pyita.md import MDSettings

    given = {"temperature": temperature, "steps": steps, "timestep": timestep, "ensemble": ensemble,
             "friction": friction, "write_every": write_every, "replicas": replicas, "starts": starts, "seed": seed,
             "min_distance_fraction": min_distance_fraction, "max_bond_stretch": max_bond_stretch,
             "max_temperature_factor": max_temperature_factor, "max_drift": max_drift,
             "reference_every": reference_every}
    settings = MDSettings(**{k: v for k, v in given.items() if v is not None})   # checked before torch loads
    from pyita.md import run_md

    summary = run_md(model, data, out, settings, reference=reference, calc_kwargs=calc_kwargs, fold=fold,
                     device=device, checkpoint_every=checkpoint_every or CHECKPOINT_EVERY, overwrite=overwrite,
                     resume=resume, progress=not quiet)
    from pyita.md.report import describe

    for line in describe(summary):
        console.print(line, highlight=False)
    resumed = f", resumed at step {summary['resumed_from_step']}" if summary["resumed_from_step"] else ""
    done(f"{summary['totals']['runs']} runs{resumed}", out, summary["seconds"])
