"""What decides a ``pyita md`` run (``MDSettings``): every default in one place, all checked before anything is
read or written. The command line takes its defaults from here (``default``)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from pyita.choices import ENSEMBLES
from pyita.errors import SettingError, whole_number

#: Steps between checkpoints when none is given (not a setting: where a run is checkpointed changes nothing in
#: its results).
CHECKPOINT_EVERY = 100
#: Largest time step accepted (fs): beyond it velocity Verlet is unstable for any bond with a light atom.
MAX_TIMESTEP = 10.0


@dataclass(frozen=True)
class MDSettings:
    """The dynamics and the failure criteria (see ``pyita.md.failure`` for what each criterion means and why
    its default is what it is); recorded in summary.json and in the checkpoint."""

    temperature: float = 300.0            # K: the initial Maxwell–Boltzmann draw and the thermostat's target
    steps: int = 1000
    timestep: float = 1.0                 # fs
    ensemble: str = "nvt"
    friction: float = 0.01                # 1/fs: Langevin (BAOAB) friction γ, NVT only (τ = 1/γ = 100 fs)
    write_every: int = 10                 # steps between trajectory frames and log rows
    replicas: int = 1                     # runs per starting structure, each with its own velocities and noise
    starts: int | None = None             # starting structures, evenly spaced through those given (None: all)
    seed: int = 0
    min_distance_fraction: float = 0.75   # (a) of the shortest distance of the species pair in the data given
    max_bond_stretch: float = 1.5         # (b) nearest-neighbour distance over its value at the start
    max_temperature_factor: float = 5.0   # (c) over the reference temperature, after the first 10 % of steps
    max_drift: float = 10.0               # (d) meV/atom, |total energy − its start value|, NVE only
    reference_every: int = 1              # with a reference calculator: label every k-th trajectory frame

    def __post_init__(self) -> None:
        for name in ("temperature", "timestep", "friction", "min_distance_fraction", "max_bond_stretch",
                     "max_temperature_factor", "max_drift"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise SettingError(f"{option(name)} must be a finite number, got {value!r}")
        if self.temperature < 0:
            raise SettingError(f"--temperature must be ≥ 0 K, got {self.temperature:g}")
        if not 0 < self.timestep <= MAX_TIMESTEP:
            raise SettingError(f"--timestep must be > 0 and ≤ {MAX_TIMESTEP:g} fs, got {self.timestep:g}")
        if self.ensemble not in ENSEMBLES:
            raise SettingError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if not self.friction > 0:
            raise SettingError(f"--friction must be > 0 per fs, got {self.friction:g}")
        for name in ("steps", "write_every", "replicas", "reference_every"):
            whole_number(getattr(self, name), option(name), 1)
        if self.starts is not None:
            whole_number(self.starts, option("starts"), 1)
        whole_number(self.seed, option("seed"), 0)
        if not 0 < self.min_distance_fraction < 1:
            raise SettingError(f"--min-distance-fraction must lie between 0 and 1, got {self.min_distance_fraction:g}")
        if not self.max_bond_stretch > 1:
            raise SettingError(f"--max-bond-stretch must be > 1, got {self.max_bond_stretch:g}")
        if not self.max_temperature_factor > 1:
            raise SettingError(f"--max-temperature-factor must be > 1, got {self.max_temperature_factor:g}")
        if not self.max_drift > 0:
            raise SettingError(f"--max-drift must be > 0 meV/atom, got {self.max_drift:g}")

    @property
    def settle_steps(self) -> int:
        """The first 10 % of the steps (at least one): the temperature criterion waits for them to pass."""
        return max(1, math.ceil(0.1 * self.steps))

    def as_dict(self) -> dict:
        return asdict(self)


def option(name: str) -> str:
    """The command-line option of a setting, as messages name it."""
    return "--" + name.replace("_", "-")


def default(name: str):
    """A setting's default, for the command line's help texts."""
    return next(f.default for f in fields(MDSettings) if f.name == name)
