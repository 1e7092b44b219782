"""The integrators, written out over one run's NumPy arrays so that every running replica can share one force
evaluation per step (ASE's integrators step one ``Atoms`` at a time, with one model call each).

Units are ASE's: Å, eV, amu, and time in ASE's unit (``ase.units.fs`` per femtosecond); momenta in amu·Å per
ASE time unit. Each integrator splits a step around the force evaluation: ``drift`` before it (positions move),
``kick`` after it. Both follow ASE's own implementations operation for operation
(``ase.md.verlet.VelocityVerlet``; ``ase.md.langevinbaoab.LangevinBAOAB`` with ``T_tau = 1/friction``, drawing
its noise as ``rng.normal(size=(atoms, 3))`` from the run's generator), which the tests compare step by step.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms, units


def masses_of(symbols) -> np.ndarray:
    """ASE's atomic masses (amu), the ones its integrators use."""
    return Atoms(symbols).get_masses()


def initial_momenta(symbols, positions: np.ndarray, cell: np.ndarray | None, temperature: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Maxwell–Boltzmann momenta at ``temperature`` drawn from ``rng`` (ASE's ``thermalize_momenta``), the
    centre of mass at rest (``Stationary``) and, for an isolated structure, no rigid rotation
    (``ZeroRotation``); both keep the temperature of the draw."""
    from ase.md.velocitydistribution import Stationary, ZeroRotation, thermalize_momenta

    atoms = Atoms(symbols, positions=positions, cell=cell if cell is not None else np.zeros((3, 3)),
                  pbc=cell is not None)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    if cell is None and len(atoms) > 2:
        ZeroRotation(atoms)
    return atoms.get_momenta()


def kinetic_energy(momenta: np.ndarray, masses: np.ndarray) -> float:
    """Σ p²/2m in eV."""
    return float(0.5 * np.sum(momenta * momenta / masses[:, None]))


def temperature_of(kinetic: float, n_atoms: int) -> float:
    """Kinetic temperature (K) over 3N degrees of freedom, as ``Atoms.get_temperature`` counts them."""
    return 2.0 * kinetic / (3 * n_atoms * units.kB)


class VelocityVerlet:
    """NVE: half kick, drift; forces at the new positions; half kick."""

    def __init__(self, timestep_fs: float):
        self.dt = timestep_fs * units.fs

    def drift(self, run) -> None:
        p = run.momenta + 0.5 * self.dt * run.forces
        run.positions = run.positions + self.dt * p / run.masses[:, None]
        run.momenta = p

    def kick(self, run) -> None:
        run.momenta = run.momenta + 0.5 * self.dt * run.forces


class LangevinBAOAB:
    """NVT by Langevin dynamics in the BAOAB splitting (Leimkuhler & Matthews, J. Chem. Phys. 138, 174102
    (2013)): half kick, half drift, an exact Ornstein–Uhlenbeck step of the momenta, half drift; forces; half
    kick. Configurations are sampled with a small time-step error, the reason for this splitting. The energy
    the O step adds is accumulated in ``run.heat``, so that E_total − heat is conserved up to the integration
    error and measures it in NVT as the total energy does in NVE."""

    def __init__(self, timestep_fs: float, temperature: float, friction_per_fs: float):
        self.dt = timestep_fs * units.fs
        gamma = friction_per_fs / units.fs
        self.decay = math.exp(-gamma * self.dt)
        self.noise = math.sqrt(units.kB * temperature) * math.sqrt(1.0 - math.exp(-2.0 * gamma * self.dt))

    def drift(self, run) -> None:
        m = run.masses[:, None]
        v = run.momenta / m + 0.5 * self.dt * run.forces / m
        x = run.positions + 0.5 * self.dt * v
        before = 0.5 * np.sum(m * v * v)
        v = v * self.decay + self.noise * run.rng.normal(size=v.shape) / np.sqrt(m)
        run.heat += float(0.5 * np.sum(m * v * v) - before)
        run.positions = x + 0.5 * self.dt * v
        run.momenta = v * m

    def kick(self, run) -> None:
        m = run.masses[:, None]
        run.momenta = (run.momenta / m + 0.5 * self.dt * run.forces / m) * m


def integrator_for(settings):
    """The integrator an ``MDSettings`` asks for."""
    if settings.ensemble == "nve":
        return VelocityVerlet(settings.timestep)
    return LangevinBAOAB(settings.timestep, settings.temperature, settings.friction)
