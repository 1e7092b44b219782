"""The dynamics of many runs at once: every step, one model call for all runs still going, then each run's own
integration and failure check; trajectory frames and log rows streamed to a working folder, a checkpoint every
``checkpoint_every`` steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from pyita.errors import Interrupted
from pyita.md.evaluate import Evaluation, evaluate, pair_names
from pyita.md.failure import find_failure
from pyita.md.integrate import integrator_for
from pyita.md.settings import CHECKPOINT_EVERY
from pyita.md.state import Run, load_checkpoint, save_checkpoint
from pyita.progress import progress_bar
from pyita.train.trainer import graceful_stop

STATE_FILE = "state.npz"
TRAJECTORIES, LOGS = "trajectories", "logs"


def log_columns(run: Run, species) -> list[str]:
    """A run's log columns: the energies, the temperature, the shortest distance of each species pair its
    structure holds, the largest nearest-neighbour stretch and displacement."""
    present = sorted(set(run.symbols))
    return ["step", "time_fs", "potential_energy_eV", "kinetic_energy_eV", "total_energy_eV", "temperature_K",
            "drift_meV_per_atom", *[f"dmin_{p}" for p in pair_names(present)], "max_nn_stretch",
            "max_displacement_A"]


class Streams:
    """The files the runs write as they go (``trajectories/NAME.extxyz``, ``logs/NAME.jsonl``): made empty, or cut
    back to a checkpoint's lengths. Each write opens its file and closes it again, so that a study of thousands
    of runs needs no more open files than one."""

    def __init__(self, folder: Path, runs: list[Run], offsets: dict[str, int] | None = None):
        self.folder = folder
        for kind in (TRAJECTORIES, LOGS):
            (folder / kind).mkdir(exist_ok=True)
        self.keys = [key for run in runs for key in (f"{TRAJECTORIES}/{run.name}.extxyz", f"{LOGS}/{run.name}.jsonl")]
        for key in self.keys:
            with open(folder / key, "r+" if offsets is not None else "w") as handle:
                if offsets is not None:
                    handle.truncate(offsets[key])

    def frame(self, run: Run, timestep: float) -> None:
        import ase.io
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = run.structure().to_ase()
        atoms.calc = SinglePointCalculator(atoms, energy=run.energy, forces=run.forces)
        atoms.info.update(run=run.name, step=run.step, time_fs=round(run.step * timestep, 9))
        if run.fold is not None:
            atoms.info["fold"] = run.fold
        with open(self.folder / TRAJECTORIES / f"{run.name}.extxyz", "a") as handle:
            ase.io.write(handle, atoms, format="extxyz")

    def log(self, run: Run, row: dict) -> None:
        with open(self.folder / LOGS / f"{run.name}.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")

    def offsets(self) -> dict[str, int]:
        return {key: (self.folder / key).stat().st_size for key in self.keys}


def log_row(run: Run, evaluation: Evaluation, timestep: float, species) -> dict:
    kinetic = run.kinetic
    names = pair_names(species)
    present = set(pair_names(sorted(set(run.symbols))))
    with np.errstate(divide="ignore", invalid="ignore"):
        stretch = evaluation.nearest / run.start_nearest
    return {"step": run.step, "time_fs": round(run.step * timestep, 9), "potential_energy_eV": run.energy,
            "kinetic_energy_eV": kinetic, "total_energy_eV": run.energy + kinetic, "temperature_K": run.temperature,
            "drift_meV_per_atom": run.drift,
            **{f"dmin_{p}": float(d) for p, d in zip(names, evaluation.shortest) if p in present},
            "max_nn_stretch": float(np.max(stretch[np.isfinite(run.start_nearest)], initial=0.0)),
            "max_displacement_A": run.displacement()}


class Engine:
    """Integrates ``runs`` with ``potential`` under ``settings``; see ``simulate``."""

    def __init__(self, potential, runs: list[Run], settings, thresholds: np.ndarray, folder: Path, meta: dict):
        self.potential, self.runs, self.settings, self.folder, self.meta = potential, runs, settings, folder, meta
        self.thresholds = thresholds
        self.species = potential.species
        self.pairs = pair_names(self.species)
        self.integrator = integrator_for(settings)

    def checkpoint(self, streams: Streams, step: int) -> None:
        save_checkpoint(self.folder / STATE_FILE, self.runs, self.meta, streams.offsets(), step)

    def begin(self, streams: Streams) -> None:
        """Step 0: forces, energies and geometry at the starting positions, the first frame and log row."""
        for run, ev in zip(self.runs, evaluate(self.potential, [run.structure() for run in self.runs])):
            run.start_positions = run.positions.copy()
            run.start_nearest = ev.nearest if ev.nearest is not None else np.full(run.n_atoms, np.inf)
            self.observe(run, ev, streams, first=True)

    def observe(self, run: Run, ev: Evaluation, streams: Streams, first: bool = False) -> None:
        """Take the evaluation after ``run.step``: finish the step, update the sums, check for failure,
        write the frame and log row when due (always the start, the end and the failure)."""
        finite = ev.problem is None and math.isfinite(ev.energy) and bool(np.isfinite(ev.forces).all())
        if finite:
            run.energy, run.forces = ev.energy, ev.forces
            if first:
                run.start_total = run.energy + run.kinetic
            else:
                self.integrator.kick(run)
        s = self.settings
        settled = None
        if finite and not first:
            temperature = run.temperature
            if run.step <= s.settle_steps:
                run.settle_sum += temperature
                run.settle_count += 1
            else:
                run.temperature_sum += temperature
                run.temperature_count += 1
                settled = run.settle_sum / run.settle_count
            run.drift_now = run.drift
            run.max_abs_drift = max(run.max_abs_drift, abs(run.drift_now))
        problem = find_failure(s, ev, pairs=self.pairs, thresholds=self.thresholds, start_nearest=run.start_nearest,
                               temperature=run.temperature if finite else math.nan, settled_mean=settled,
                               drift=run.drift_now)
        if problem is not None:
            run.failure = {"criterion": problem[0], "detail": problem[1], "step": run.step,
                           "time_fs": round(run.step * s.timestep, 9)}
        if finite and (first or run.step % s.write_every == 0 or run.step == s.steps or problem is not None):
            streams.frame(run, s.timestep)
            streams.log(run, log_row(run, ev, s.timestep, self.species))

    def simulate(self, checkpoint_every: int = CHECKPOINT_EVERY, progress: bool = True) -> int:
        """Run every run to the end or its failure, continuing from the checkpoint in the folder if there is
        one; returns the step the work was resumed from (0 for a fresh start)."""
        state = self.folder / STATE_FILE
        if state.exists():
            offsets, done = load_checkpoint(state, self.runs, self.meta)
            streams = Streams(self.folder, self.runs, offsets)
        else:
            done = 0
            streams = Streams(self.folder, self.runs)
            self.begin(streams)
        total = self.settings.steps
        label = "md" if not done else f"md (resumed at step {done})"
        with graceful_stop() as stop, progress_bar(total - done, label, "steps", enabled=progress) as advance:
            for step in range(done + 1, total + 1):
                running = [run for run in self.runs if run.running]
                if not running:
                    break
                for run in running:
                    self.integrator.drift(run)
                    run.step = step
                for run, ev in zip(running, evaluate(self.potential, [run.structure() for run in running])):
                    self.observe(run, ev, streams)
                if step % checkpoint_every == 0:
                    self.checkpoint(streams, step)
                advance(1, running=f"{sum(run.running for run in self.runs)}/{len(self.runs)}")
                if stop.requested:   # Ctrl-C or SIGTERM: the step is complete, keep it
                    self.checkpoint(streams, step)
                    stopped = Interrupted(stop.signum)
                    stopped.add_note(f"md stopped after step {step}")
                    raise stopped
        self.checkpoint(streams, total)
        return done
