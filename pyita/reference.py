"""Atomic reference energies: the per-species offsets aenet subtracts (generate.in TYPES).

Every command takes them from ``resolve_references``: given ones, else the input generate.in's, else fitted by
least squares on composition, so per-atom energies and MAXENERGY filters mean "above the isolated atoms" rather
than a raw DFT total.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from pyita.errors import InputError, PyitaError, SettingError
from pyita.structure import Structure


class Composition(NamedTuple):
    """What the reference-energy fit needs of a structure: its species counts (in order of first appearance) and
    its label. ``pyita augment`` keeps one per parent instead of the parent itself; it has a Structure's
    ``symbols``, ``energy``, ``energy_kind`` and ``is_derived``, so ``resolve_references`` takes either."""

    counts: tuple[tuple[str, int], ...]
    energy: float | None
    energy_kind: str = "total"
    is_derived: bool = False
    source: str | None = None

    @classmethod
    def of(cls, structure: Structure) -> Composition:
        counts: dict[str, int] = {}
        for symbol in structure.symbols:
            counts[symbol] = counts.get(symbol, 0) + 1
        return cls(tuple(counts.items()), structure.energy, structure.energy_kind, structure.is_derived)

    @property
    def symbols(self) -> list[str]:
        return [symbol for symbol, n in self.counts for _ in range(n)]

    @property
    def species(self) -> list[str]:
        return [symbol for symbol, _ in self.counts]


def composition_matrix(structures: Sequence[Structure], species: Sequence[str]) -> np.ndarray:
    """Counts of each species per structure, shape (n_structures, n_species)."""
    index = {s: k for k, s in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, structure in enumerate(structures):
        for symbol in structure.symbols:
            if symbol not in index:
                raise InputError(f"species {symbol} not in {list(species)}", structure.source)
            counts[row, index[symbol]] += 1
    return counts


def fit_references(structures: Sequence[Structure], species: Sequence[str],
                   fixed: dict[str, float] | None = None) -> tuple[dict[str, float], dict]:
    """Least-squares atomic energies: E_total ≈ Σ_s n_s·e_s over the structures with total energies (cohesive
    ones are already referenced), with the species in ``fixed`` held at their values.

    Returns (energies of the fitted species, info). When the compositions do not determine every species
    (e.g. all structures TiO2), the minimum-norm solution is used and ``info["rank_deficient"]`` is set: the
    cohesive energies of structures with those compositions are unaffected, the split between species is not.
    """
    fixed = dict(fixed or {})
    free = [s for s in species if s not in fixed]
    used = [s for s in structures if s.energy is not None and s.energy_kind == "total"]
    if not free:
        return {}, {"n_structures": len(used)}
    if not used:
        raise PyitaError("cannot fit atomic reference energies: no structure has a total energy "
                         "(give them with --types Sym=E,…)")
    counts = composition_matrix(used, list(species))
    energies = np.array([s.energy for s in used], dtype=float)
    columns = {s: k for k, s in enumerate(species)}
    for sym, value in fixed.items():
        if sym in columns:
            energies = energies - counts[:, columns[sym]] * value
    a = counts[:, [columns[s] for s in free]]
    solution, *_ = np.linalg.lstsq(a, energies, rcond=None)
    rank = int(np.linalg.matrix_rank(a))
    residual = (energies - a @ solution) / counts.sum(axis=1)
    info = {"n_structures": len(used), "rank": rank, "rank_deficient": rank < len(free),
            "residual_rms_eV_per_atom": float(np.sqrt(np.mean(residual ** 2)))}
    return {s: float(e) for s, e in zip(free, solution)}, info


@dataclass
class References:
    """Atomic reference energies (eV) of each species, where each came from (``origin``: "user", "generate.in",
    "fitted", "zero", or the caller's name for given ones, e.g. "initial networks"), and the fit's info (empty when
    nothing was fitted; ``note`` says what was fitted and how well)."""

    energies: dict[str, float]
    origin: dict[str, str]
    fit: dict = field(default_factory=dict)


def resolve_references(structures: Sequence[Structure], species: Sequence[str],
                       given: dict[str, float] | None = None, from_input: dict[str, float] | None = None, *,
                       given_origin: str = "user", warn: bool = True) -> References:
    """The one rule every command uses for the reference energies of ``species``: given ones (``given``: --types,
    settings, initial networks), else the input generate.in's TYPES (``from_input``; an all-zero block is the
    placeholder earlier `pyita augment` versions wrote, and counts as missing), else a least-squares fit on
    ``structures`` with the others held fixed (``fit_references``). When no structure has a total energy there is
    nothing to fit and cohesive energies need no reference: the rest are 0.0. ``warn`` repeats the fit's note as a
    warning, and warns of given energies for species not in ``species``."""
    given, from_input = dict(given or {}), dict(from_input or {})
    energies: dict[str, float] = {}
    origin: dict[str, str] = {}
    unknown = set(given) - set(species)
    if unknown and warn:
        warnings.warn(f"reference energies given for species not in the data: {sorted(unknown)}", stacklevel=3)
    placeholder = bool(from_input) and all(v == 0.0 for v in from_input.values())
    for s in species:
        if s in given:
            energies[s], origin[s] = float(given[s]), given_origin
        elif s in from_input and not placeholder:
            energies[s], origin[s] = float(from_input[s]), "generate.in"
    missing = [s for s in species if s not in energies]
    if not missing:
        return References(energies, origin)
    if not any(s.energy is not None and s.energy_kind == "total" for s in structures):
        note = (f"atomic reference energies of {', '.join(missing)} set to 0.0: no structure has a total energy "
                "to fit them to (cohesive energies need none)")
        fitted, info, how = dict.fromkeys(missing, 0.0), {"n_structures": 0}, "zero"
    else:
        (fitted, info), how = fit_references(structures, species, fixed=energies), "fitted"
        note = (f"atomic reference energies of {', '.join(missing)} fitted by least squares on composition "
                f"({info['n_structures']} training structures, residual "
                f"{1000 * info['residual_rms_eV_per_atom']:.1f} meV/atom RMS)")
    if placeholder:
        note += "; the input generate.in had placeholder TYPES energies (all 0.0)"
    if info.get("rank_deficient"):
        note += ("; the compositions do not separate the species, so the minimum-norm split is used "
                 "(cohesive energies of these compositions are unaffected)")
    for s in missing:
        energies[s], origin[s] = fitted[s], how
    info["note"] = note
    if warn:
        warnings.warn(note, stacklevel=3)
    return References(energies, origin, info)


def finite_number(value) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool or text), else None: the rule for every
    energy a user gives (reference energies, MAXENERGY), so that NaN or inf never reaches a model."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def check_max_energy(value) -> float | None:
    """MAXENERGY (eV/atom above the atomic references; None: no filter), refused unless a finite number:
    NaN would silently drop every structure, inf keep them all under a name that says otherwise."""
    if value is None:
        return None
    number = finite_number(value)
    if number is None:
        raise SettingError(f"--max-energy / max_energy (MAXENERGY) must be a finite number of eV/atom, "
                           f"got {value!r}")
    return number


def check_reference_energies(energies: dict | None, where: str = "atomic reference energy") -> dict | None:
    """Each species' reference energy, refused unless a finite number (eV)."""
    if energies is None:
        return None
    for sym, value in energies.items():
        if finite_number(value) is None:
            raise SettingError(f"{where} of {sym} must be a finite number (eV), got {value!r}")
    return {sym: float(value) for sym, value in energies.items()}


def parse_types(text: str | None) -> dict[str, float]:
    """``"Ti=-1626.67,O=-433.23"`` (as given to --types) → {"Ti": -1626.67, "O": -433.23}."""
    out: dict[str, float] = {}
    if not text:
        return out
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        sym, sep, value = item.partition("=")
        sym = sym.strip()
        try:
            if not sep or not sym:
                raise ValueError
            energy = float(value.replace("d", "e").replace("D", "e"))
        except ValueError:
            raise InputError(f"--types entry {item!r} must look like Sym=energy (eV), e.g. Ti=-1626.67") from None
        if sym in out:
            raise SettingError(f"--types gives {sym} twice ({sym}={out[sym]:g} and {item}); give each species once")
        if finite_number(energy) is None:
            raise SettingError(f"--types entry {item!r}: the energy must be a finite number (eV)")
        out[sym] = energy
    return out


def _reference_sum(structure: Structure, reference: dict[str, float]) -> float:
    try:
        return sum(reference[s] for s in structure.symbols)
    except KeyError as exc:
        raise InputError(f"no reference energy for species {exc.args[0]}", structure.source) from None


def total_energy(structure: Structure, reference: dict[str, float]) -> float:
    """The structure's energy as a total energy (cohesive energies get the atomic references added)."""
    if structure.energy_kind == "cohesive":
        return structure.energy + _reference_sum(structure, reference)
    return structure.energy


def cohesive_per_atom(structure: Structure, reference: dict[str, float]) -> float:
    """Per-atom energy above the atomic references, eV/atom: aenet's MAXENERGY quantity, taken as aenet
    takes it (a non-zero cohesive energy as is, else the total energy minus the references)."""
    if structure.energy_kind == "cohesive" and structure.energy != 0:
        return structure.energy / len(structure)
    return (structure.energy - _reference_sum(structure, reference)) / len(structure)


def max_energy_mask(structures: Sequence[Structure], reference: dict[str, float], max_energy: float):
    """aenet's MAXENERGY: keep structures whose per-atom energy above the references is ≤ max_energy."""
    max_energy = check_max_energy(max_energy)
    return np.array([cohesive_per_atom(s, reference) <= max_energy for s in structures])
