"""The one structure type passed between all parts of PyITA.

A light dataclass rather than ``ase.Atoms`` because augmentation and featurization handle tens of
thousands of structures; ``to_ase``/``from_ase`` convert at the edges.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita.errors import InputError, SettingError
from pyita.paths import file_keys


#: ASE's own names of the labels, and MACE's (its default ``--energy_key``/``--forces_key``), which PyITA
#: recognises without being told when ASE's are absent.
ASE_ENERGY, ASE_FORCES = "energy", "forces"
REF_ENERGY, REF_FORCES = "REF_energy", "REF_forces"


def _calc_results(atoms) -> dict:
    """What a calculator attached to ``atoms`` holds (ASE's readers put file labels on a SinglePointCalculator)."""
    return (getattr(atoms.calc, "results", None) or {}) if atoms.calc is not None else {}


@dataclass(frozen=True)
class LabelKeys:
    """Where an ASE file (extended XYZ…) keeps the reference labels: the ``info`` key of the energy and the
    ``arrays`` key of the forces (``--energy-key``/``--forces-key``; ``energy``/``forces`` also match what ASE
    put on a SinglePointCalculator). None: ASE's ``energy``/``forces``, else MACE's ``REF_energy``/``REF_forces``;
    a frame holding both with different values is refused rather than guessed at. A key that is named must be
    in every frame (forces: every frame not derived)."""

    energy: str | None = None
    forces: str | None = None

    def __post_init__(self) -> None:
        for option, key in (("--energy-key", self.energy), ("--forces-key", self.forces)):
            if key is not None and (not isinstance(key, str) or not key.strip() or key != key.strip()):
                raise SettingError(f"{option} must be a key name without surrounding blanks, got {key!r}")

    def as_dict(self) -> dict:
        """As recorded with a run (None: the default lookup)."""
        return {"energy": self.energy, "forces": self.forces}

    def info_keys(self) -> set[str]:
        """Keys that hold labels, so they are not also copied into ``Structure.info``."""
        return {REF_ENERGY, self.energy or ASE_ENERGY}

    def energy_of(self, atoms, where) -> float | None:
        """The reference energy of ``atoms`` (a frame read from ``where``), or None if it has none."""
        energy = self._label(atoms, where, self.energy, ASE_ENERGY, REF_ENERGY, "--energy-key", atoms.info, True)
        try:
            return None if energy is None else float(energy)
        except (TypeError, ValueError):
            raise InputError(f"the energy {energy!r} ({self.energy or 'energy'}) is not a number", where) from None

    def forces_of(self, atoms, where, required: bool = True):
        """The reference forces of ``atoms`` (None if it has none; a named key may be missing unless
        ``required``, as in a derived frame)."""
        return self._label(atoms, where, self.forces, ASE_FORCES, REF_FORCES, "--forces-key", atoms.arrays,
                           required)

    @staticmethod
    def _label(atoms, where, key, plain, ref, option, table, required):
        results = _calc_results(atoms)

        def value(name):
            found = results.get(name)
            if found is None and name == ASE_ENERGY:
                found = results.get("free_energy")
            return table.get(name) if found is None else found

        if key is not None:
            found = value(key)
            if found is None and required:
                raise InputError(f"frame has no {key!r} (named by {option} / {option[2:].replace('-', '_')})",
                                 where)
            return found
        first, second = value(plain), value(ref)
        if first is not None and second is not None and not np.array_equal(np.asarray(first), np.asarray(second)):
            raise InputError(f"frame holds both {plain!r} and {ref!r} with different values; give {option} to "
                             "say which is the reference label", where)
        return first if first is not None else second


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
    def is_derived(self) -> bool:
        """A Taylor-derived structure: its energy is a first-order estimate and it has no force labels
        (made by ``pyita.augment``, or read back from a file PyITA wrote)."""
        return bool(self.info.get("derived")) or ("parent" in self.info and self.forces is None)

    @property
    def parent(self) -> str | int | None:
        """What a derived structure names as its parent: the parent's source (files written by
        ``pyita augment``), else its index among the parents it was made from (``pyita.augment.augment``)."""
        return self.info.get("parent_source") or self.info.get("parent")

    @property
    def periodic(self) -> bool:
        return self.cell is not None

    def copy(self, **changes) -> Structure:
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
    def from_ase(cls, atoms, source: str | None = None, keys: LabelKeys | None = None) -> Structure:
        """Take energy and forces where ``keys`` says (``LabelKeys``: by default ASE's own ``energy``/``forces``,
        on the attached calculator or in ``info``/``arrays``, else MACE's ``REF_energy``/``REF_forces``)."""
        keys = keys or LabelKeys()
        derived = bool(atoms.info.get("derived")) or "parent" in atoms.info
        energy = keys.energy_of(atoms, source)
        forces = keys.forces_of(atoms, source, required=not derived)
        pbc = np.asarray(atoms.pbc)
        if pbc.any() and not pbc.all():
            raise InputError("partially periodic cells are not supported (aenet needs all or none)", source)
        info = {k: v for k, v in atoms.info.items() if k not in ("energy", "energy_kind", "source")
                and k not in keys.info_keys()}
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

def link_parents(structures: Sequence[Structure], folder: str | Path | None = None,
                 aliases: Sequence[str | None] | None = None) -> np.ndarray:
    """For each structure, the index of the original it belongs to: itself for an original, its parent's
    index for a derived structure, −1 for a derived structure whose parent is not among ``structures``.

    A derived structure names its parent (``Structure.parent``) by source, as files written by ``pyita
    augment`` do, or by index among the originals, as ``pyita.augment.augment`` does. A source matches an
    original's ``source``, its ``original_source`` (a parent copy) or its entry in ``aliases`` (other names,
    e.g. the source an extended-XYZ frame records): as written, as the same file (a relative name taken from
    ``folder``, e.g. the generate.in's, or from the current folder), or by a bare file name only one original
    has.
    """
    originals = [k for k, s in enumerate(structures) if not s.is_derived]
    by_key: dict[str, int] = {}
    by_bare: dict[str, list[int]] = {}
    for k in originals:
        names = [structures[k].source, structures[k].info.get("original_source")]
        names += [aliases[k]] if aliases is not None and k < len(aliases) else []
        for name in filter(None, names):
            for key in file_keys(name):
                by_key.setdefault(key, k)
            by_bare.setdefault(Path(name).name, []).append(k)
    groups = np.arange(len(structures))
    for k, s in enumerate(structures):
        if not s.is_derived:
            continue
        source, index, found = s.info.get("parent_source"), s.info.get("parent"), None
        if source:
            found = next((by_key[key] for key in file_keys(source, folder) if key in by_key), None)
            if found is None and len(set(by_bare.get(Path(source).name, []))) == 1:
                found = by_bare[Path(source).name][0]
        if found is None and isinstance(index, (int, np.integer)) and 0 <= index < len(originals):
            found = originals[int(index)]
        groups[k] = -1 if found is None else found
    return groups


def geometry_key(structure: Structure) -> str:
    """Hash of what a model's inputs depend on: symbols, positions and cell (not labels) — the key of the
    feature cache and of the training-set fingerprints a model records."""
    h = hashlib.blake2b(digest_size=16)
    h.update(" ".join(structure.symbols).encode())
    h.update(np.ascontiguousarray(structure.positions, dtype=np.float64).tobytes())
    h.update(b"none" if structure.cell is None else np.ascontiguousarray(structure.cell, dtype=np.float64).tobytes())
    return h.hexdigest()


def held_out_without_copies(structures: Sequence[Structure], train: Sequence[int],
                            *held_out: Sequence[int]) -> list[list[int]]:
    """The held-out index lists (validation, test…) without copies — same symbols, positions, cell and
    energy — of a training structure or of a structure held out before: a structure read twice (two files of
    one content) must not sit on both sides of a split, nor count twice in a test. Training is left as it is (a
    copy there only weighs twice), so the model trained is the same with or without copies in the data. A
    warning names what was dropped."""
    def key(k: int) -> tuple:
        st = structures[k]
        return (tuple(st.symbols), st.positions.tobytes(), None if st.cell is None else st.cell.tobytes(),
                st.energy)

    seen = {key(k): k for k in train}
    kept, dropped = [], []
    for indices in held_out:
        kept.append([])
        for k in indices:
            first = seen.setdefault(key(k), k)
            if first == k:
                kept[-1].append(k)
            else:
                dropped.append(f"{structures[k].source or f'structure {k + 1}'} (a copy of "
                               f"{structures[first].source or f'structure {first + 1}'})")
    if dropped:
        warnings.warn(f"{len(dropped)} held-out structures are copies of structures used before and are left out "
                      f"of the held-out set: {', '.join(dropped[:3])}{', …' if len(dropped) > 3 else ''}",
                      stacklevel=2)
    return kept
