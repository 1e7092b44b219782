"""The one structure type passed between all parts of PyITA.

A light dataclass rather than ``ase.Atoms`` because augmentation and featurization handle tens of
thousands of structures; ``to_ase``/``from_ase`` convert at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pyita.errors import InputError


@dataclass
class Structure:
    """Atoms with their reference labels.

    ``cell`` is None for isolated structures (aenet's ``ATOMS`` block). ``energy`` is in eV and is a total
    energy unless ``energy_kind == "cohesive"``. ``forces`` (eV/Å) are None when unknown, e.g. for derived
    structures read from extxyz. ``comments`` are free-text header lines (provenance), ``info`` holds
    machine-readable metadata such as the parent of a derived structure.
    """

    symbols: list[str]
    positions: np.ndarray
    cell: np.ndarray | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    energy_kind: str = "total"
    source: str | None = None
    comments: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.symbols = list(self.symbols)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        if self.cell is not None:
            self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        n = len(self.symbols)
        if self.positions.shape[0] != n:
            raise InputError(f"{n} symbols but {self.positions.shape[0]} positions", self.source)
        if self.forces is not None and self.forces.shape[0] != n:
            raise InputError(f"{n} atoms but {self.forces.shape[0]} force rows", self.source)
        if self.energy_kind not in ("total", "cohesive"):
            raise ValueError(f"energy_kind must be 'total' or 'cohesive', not {self.energy_kind!r}")

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def periodic(self) -> bool:
        return self.cell is not None

    def copy(self, **changes) -> "Structure":
        """A deep copy (arrays and metadata are not shared), with optional field changes."""
        new = replace(
            self,
            positions=self.positions.copy(),
            cell=None if self.cell is None else self.cell.copy(),
            forces=None if self.forces is None else self.forces.copy(),
            comments=list(self.comments),
            info=dict(self.info),
        )
        for key, value in changes.items():
            setattr(new, key, value)
        return new

    def to_ase(self):
        """An ``ase.Atoms`` with energy (eV) and forces (eV/Å) on a SinglePointCalculator."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(
            symbols=self.symbols,
            positions=self.positions,
            cell=self.cell if self.cell is not None else np.zeros((3, 3)),
            pbc=self.cell is not None,
        )
        atoms.info.update(self.info)
        if self.source:
            atoms.info.setdefault("source", self.source)
        if self.energy_kind == "cohesive":
            atoms.info["energy_kind"] = "cohesive"
        if self.energy is not None or self.forces is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=self.energy, forces=self.forces)
        return atoms

    @classmethod
    def from_ase(cls, atoms, source: str | None = None) -> "Structure":
        """Take energy and forces from the attached calculator (or ``info``/``arrays`` as ASE's extxyz stores them)."""
        energy = forces = None
        calc = atoms.calc
        if calc is not None:
            results = getattr(calc, "results", {})
            energy = results.get("energy", results.get("free_energy"))
            forces = results.get("forces")
        if energy is None:
            energy = atoms.info.get("energy")
        if forces is None and "forces" in atoms.arrays:
            forces = atoms.arrays["forces"]
        pbc = np.asarray(atoms.pbc)
        if pbc.any() and not pbc.all():
            raise InputError("partially periodic cells are not supported (aenet needs all or none)", source)
        info = {k: v for k, v in atoms.info.items() if k not in ("energy", "energy_kind", "source")}
        return cls(
            symbols=atoms.get_chemical_symbols(),
            positions=atoms.get_positions(),
            cell=np.array(atoms.cell[:]) if pbc.all() else None,
            energy=None if energy is None else float(energy),
            forces=None if forces is None else np.array(forces, dtype=np.float64),
            energy_kind=atoms.info.get("energy_kind", "total"),
            source=source or atoms.info.get("source"),
            info=info,
        )
