"""One trajectory's state (``Run``) and the checkpoint that holds every run's state exactly.

A checkpoint is one ``.npz`` file written atomically: the arrays of every run at full precision, the random
generators' states, the running sums the summary needs, and how many bytes of each streamed output file
belong to it. Resuming restores all of that and cuts the streamed files back to those lengths, so the
continued run writes what the uninterrupted one would have, number for number.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pyita.errors import PyitaError
from pyita.io.atomic import atomic_write
from pyita.md.integrate import kinetic_energy, temperature_of
from pyita.structure import Structure

CHECKPOINT_FORMAT = 1
#: The arrays of a run kept in the checkpoint; the rest of its state is in ``SCALARS``.
ARRAYS = ("positions", "momenta", "forces", "start_positions", "start_nearest")
SCALARS = ("energy", "step", "heat", "start_total", "settle_sum", "settle_count", "temperature_sum",
           "temperature_count", "drift_now", "max_abs_drift", "failure")


@dataclass
class Run:
    """One starting structure × one replica: where its atoms are, how fast they move, and how it has gone."""

    name: str
    start: int                 # the starting structure's place among all structures given
    replica: int
    source: str
    seed: list[int]            # the run's random generator's seed sequence: (seed, start, replica)
    symbols: list[str]
    cell: np.ndarray | None
    fold: str | None           # the starting structure's own "fold" (how a reference labels it)
    masses: np.ndarray
    rng: np.random.Generator
    positions: np.ndarray
    momenta: np.ndarray
    forces: np.ndarray | None = None
    energy: float = math.nan
    step: int = 0
    heat: float = 0.0          # energy the thermostat put in (NVT)
    start_positions: np.ndarray | None = None
    start_nearest: np.ndarray | None = None
    start_total: float = math.nan
    settle_sum: float = 0.0    # temperatures over the first 10 % of the steps
    settle_count: int = 0
    temperature_sum: float = 0.0   # temperatures after them
    temperature_count: int = 0
    drift_now: float = 0.0         # meV/atom at the last step with finite numbers
    max_abs_drift: float = 0.0
    failure: dict | None = field(default=None)

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def running(self) -> bool:
        return self.failure is None

    @property
    def kinetic(self) -> float:
        return kinetic_energy(self.momenta, self.masses)

    @property
    def temperature(self) -> float:
        return temperature_of(self.kinetic, self.n_atoms)

    @property
    def mean_temperature(self) -> float:
        """Mean kinetic temperature after the first 10 % of the steps (over those, for a run that ended within
        them; NaN for one that never took a step)."""
        if self.temperature_count:
            return self.temperature_sum / self.temperature_count
        return self.settle_sum / self.settle_count if self.settle_count else math.nan

    @property
    def drift(self) -> float:
        """meV/atom: E_pot + E_kin − heat now, less its start value."""
        return (self.energy + self.kinetic - self.heat - self.start_total) * 1000 / self.n_atoms

    def structure(self) -> Structure:
        return Structure(self.symbols, self.positions, self.cell)

    def displacement(self) -> float:
        """The largest distance (Å) an atom has moved from its start, the centre of mass's motion taken out."""
        moved = self.positions - self.start_positions
        com = (self.masses[:, None] * moved).sum(axis=0) / self.masses.sum()
        return float(np.linalg.norm(moved - com, axis=1).max())


def save_checkpoint(path: Path, runs: list[Run], meta: dict, offsets: dict[str, int], step: int) -> None:
    """Every run's state after ``step``, the run's identity (``meta``) and the streamed files' lengths,
    atomically."""
    arrays = {f"{k}.{name}": getattr(run, name) for k, run in enumerate(runs) for name in ARRAYS}
    record = {"format": CHECKPOINT_FORMAT, "meta": meta, "offsets": offsets, "step": step,
              "runs": [{"name": run.name, "rng": run.rng.bit_generator.state,
                        **{name: getattr(run, name) for name in SCALARS}} for run in runs]}
    arrays["record"] = np.array(json.dumps(record))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(path, write)


def load_checkpoint(path: Path, runs: list[Run], meta: dict) -> tuple[dict[str, int], int]:
    """Restore ``runs`` (built afresh from the same inputs) from the checkpoint at ``path``; returns the
    streamed files' lengths and the step it was taken after. A checkpoint of another run (other inputs, model
    or settings) is refused."""
    try:
        with np.load(path, allow_pickle=False) as data:
            record = json.loads(str(data["record"]))
            arrays = {key: data[key] for key in data.files if key != "record"}
    except (OSError, ValueError, KeyError) as exc:
        raise PyitaError(f"checkpoint {path} cannot be read ({type(exc).__name__}); use --overwrite to start "
                         "again") from None
    if record.get("format") != CHECKPOINT_FORMAT:
        raise PyitaError(f"checkpoint {path} has another format; use --overwrite to start again")
    old, new = record["meta"], json.loads(json.dumps(meta))
    for key, value in new.items():
        if key != "pyita_version" and old.get(key) != value:
            raise PyitaError(f"checkpoint {path} belongs to a different run ({key}: {old.get(key)!r} there, "
                             f"{value!r} now); rerun with the same inputs and settings, or use --overwrite to "
                             "start again")
    if [r["name"] for r in record["runs"]] != [run.name for run in runs]:
        raise PyitaError(f"checkpoint {path} holds other runs; use --overwrite to start again")
    for k, (run, saved) in enumerate(zip(runs, record["runs"])):
        for name in ARRAYS:
            setattr(run, name, arrays[f"{k}.{name}"])
        for name in SCALARS:
            setattr(run, name, saved[name])
        run.rng.bit_generator.state = saved["rng"]
    return record["offsets"], int(record["step"])
