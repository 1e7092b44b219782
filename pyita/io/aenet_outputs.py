"""Reading what aenet 2.0.4 writes: train.x's log and energies files, predict.x's output, and the error
and warning lines of any of its programs (they exit 0 after most errors)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from pyita.errors import InputError


_FLOAT_3DIGIT_EXP = re.compile(r"^([+-]?\d*\.\d*)([+-]\d{3})$")


def fortran_float(token: str) -> float:
    """A number as Fortran prints it: D exponents, 3-digit exponents without 'E', NaN/Infinity, '****'."""
    t = token.strip()
    if not t or set(t) == {"*"}:
        return math.nan
    low = t.lower()
    if low in ("nan", "+nan", "-nan"):
        return math.nan
    if low.lstrip("+-") in ("infinity", "inf"):
        return -math.inf if low.startswith("-") else math.inf
    t = t.replace("D", "E").replace("d", "e")
    match = _FLOAT_3DIGIT_EXP.match(t)
    if match:
        t = f"{match.group(1)}E{match.group(2)}"
    return float(t)


_ERROR_LINE = re.compile(r"\bError\b|\bERROR\b|Fortran runtime error|Segmentation fault|"
                         r"Program received signal|Floating point exception|Killed")
_WARNING_LINE = re.compile(r"\bWarning\b|\bWARNING\b|^\s*Skipping ")


def scan_output(text: str) -> tuple[list[str], list[str]]:
    """(error messages, warnings) in an aenet program's output; an error keeps up to two following lines."""
    lines = text.splitlines()
    errors, warns = [], []
    skip_until = -1
    for i, line in enumerate(lines):
        if i <= skip_until:
            continue
        if _ERROR_LINE.search(line):
            block = [line.strip()]
            if i > 0 and lines[i - 1].strip().startswith("At line"):
                block.insert(0, lines[i - 1].strip())
            for nxt in lines[i + 1:i + 3]:
                if not nxt.strip() or _ERROR_LINE.search(nxt):
                    break
                block.append(nxt.strip())
                skip_until = i + len(block) - 1
            errors.append(" ".join(block))
        elif _WARNING_LINE.search(line):
            warns.append(line.strip())
    return errors, warns


EPOCH_ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*<\s*$")
_FINAL = re.compile(r"Final (MAE|RMSE) of (training|testing) set\s*=\s*(\S+)\s*meV/atom")
_COUNT = re.compile(r"^\s*(Training|Testing)\s+structures\s*:\s*(\d+)")


def read_train_output(path: str | Path) -> dict:
    """train.x's output: ``epochs`` (one dict per table row ending in ``<``: epoch, MAE_train, RMSE_train,
    MAE_test, RMSE_test, all in eV/atom as aenet prints them; NaN where aenet prints NaN, e.g. the test
    columns with TESTPERCENT 0) and ``final`` (aenet's closing summary in meV/atom, or None when training did
    not finish), plus ``n_train``, ``n_test``, ``errors`` and ``warnings``."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read train.x output: {exc}", path) from None
    epochs, final, counts = [], {}, {}
    for line in text.splitlines():
        row = EPOCH_ROW.match(line)
        if row:
            values = [fortran_float(v) for v in row.groups()[1:]]
            epochs.append({"epoch": int(row.group(1)), "MAE_train": values[0], "RMSE_train": values[1],
                           "MAE_test": values[2], "RMSE_test": values[3]})
            continue
        m = _FINAL.search(line)
        if m:
            final[f"{m.group(1)}_{'train' if m.group(2) == 'training' else 'test'}_meV_atom"] = \
                fortran_float(m.group(3))
            continue
        m = _COUNT.match(line)
        if m:
            counts[m.group(1).lower()] = int(m.group(2))
    errors, warns = scan_output(text)
    return {"epochs": epochs, "final": final or None, "n_train": counts.get("training"),
            "n_test": counts.get("testing"), "errors": errors, "warnings": warns}


def read_energies_file(path: str | Path) -> list[dict]:
    """energies.train.N / energies.test.N of train.x (SAVE_ENERGIES), one dict per structure.

    Columns: ``Ref(eV) ANN(eV) #atoms Ref(eV/atom) ANN(eV/atom) Ref-ANN(eV/atom) Cost-Func`` then one count
    per species (``#Ti #O`` in the header; how many depends on the data) and the structure's path. "Ref" is
    the reference energy minus the atomic reference energies (aenet's cohesive energy). Keys: E_ref, E_ann,
    n_atoms, E_ref_per_atom, E_ann_per_atom, diff_per_atom (Ref−ANN, eV/atom), cost, counts {Sym: n}, file.
    """
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read energies file: {exc}", path) from None
    species: list[str] | None = None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if species is None and "Ref(eV)" in line:
            tokens = line.split()
            species = [t[1:] for t in tokens if t.startswith("#") and t != "#atoms"]
            continue
        tokens = line.split()
        try:
            numbers = [fortran_float(t) for t in tokens[:7]]
            n_atoms = int(tokens[2])
        except (ValueError, IndexError):
            raise InputError(f"not an energies row: {line.strip()[:60]!r}", path, lineno) from None
        n_species = len(species) if species else None
        if n_species is None:   # no header: species counts are the integers before the path
            n_species = 0
            while 7 + n_species < len(tokens) - 1 and re.fullmatch(r"\d+", tokens[7 + n_species]):
                n_species += 1
        parts = line.split(None, 7 + n_species)
        if len(parts) < 8 + n_species:
            raise InputError(f"energies row has {len(tokens)} fields, expected {8 + n_species}", path, lineno)
        try:
            counts = [int(t) for t in parts[7:7 + n_species]]
        except ValueError:
            raise InputError("species count columns are not integers (header and rows disagree?)",
                             path, lineno) from None
        names = species or [f"type{i + 1}" for i in range(n_species)]
        rows.append({"E_ref": numbers[0], "E_ann": numbers[1], "n_atoms": n_atoms,
                     "E_ref_per_atom": numbers[3], "E_ann_per_atom": numbers[4], "diff_per_atom": numbers[5],
                     "cost": numbers[6], "counts": dict(zip(names, counts)), "file": parts[7 + n_species].strip()})
    return rows


_HEADER_VALUE = re.compile(r"^\s*(Structure number|File name|Number of atoms|Number of species)\s*:\s*(.*?)\s*$")
_ENERGY = re.compile(r"^\s*(Cohesive|Total) energy\s*:\s*(\S+)\s*eV")
_LATTICE = re.compile(r"^\s*([abc])\s*=\s*\(\s*(\S+)\s+(\S+)\s+(\S+)\s*\)")


def _is_separator(line: str) -> bool:
    s = line.strip()
    return len(s) >= 10 and set(s) == {"+"}


def read_predict_output(path: str | Path) -> list[dict]:
    """predict.x's output: one dict per structure with file, n_atoms, cohesive_energy and total_energy
    (eV), symbols, positions (N×3 Å, as predict.x prints them: wrapped into the cell), forces (N×3 eV/Å,
    or None without FORCES), lattice (3×3 or None), structure_number, relaxed."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read predict.x output: {exc}", path) from None
    blocks, current = [], []
    for line in lines:
        if _is_separator(line):
            blocks.append(current)
            current = []
        else:
            current.append(line)
    blocks.append(current)
    out = []
    for block in blocks:
        parsed = _parse_predict_block(block, path)
        if parsed is not None:
            out.append(parsed)
    return out


def _parse_predict_block(lines: list[str], path) -> dict | None:
    info: dict = {}
    lattice = {}
    symbols, positions, forces = [], [], []
    with_forces = False
    tables = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _HEADER_VALUE.match(line)
        if m:
            info[m.group(1)] = m.group(2)
            i += 1
            continue
        m = _LATTICE.match(line)
        if m:
            lattice[m.group(1)] = [fortran_float(v) for v in m.groups()[1:]]
            i += 1
            continue
        m = _ENERGY.match(line)
        if m:
            info[m.group(1).lower()] = fortran_float(m.group(2))
            i += 1
            continue
        if line.strip().startswith("Cartesian atomic coordinates"):
            tables += 1
            if tables > 1:     # the table after a relaxation; keep the input geometry's table
                i += 1
                continue
            with_forces = "forces" in line
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("---"):
                i += 1
            i += 1
            while i < len(lines) and lines[i].strip():
                tokens = lines[i].split()
                symbols.append(tokens[0])
                positions.append([fortran_float(t) for t in tokens[1:4]])
                if with_forces:
                    if len(tokens) < 7:
                        raise InputError(f"atom line without forces: {lines[i].strip()!r}", path)
                    forces.append([fortran_float(t) for t in tokens[4:7]])
                i += 1
            continue
        i += 1
    if "Structure number" not in info:
        return None
    n_atoms = int(info.get("Number of atoms", len(symbols)))
    if symbols and len(symbols) != n_atoms:
        raise InputError(f"structure {info['Structure number']}: {len(symbols)} atom lines but "
                         f"'Number of atoms : {n_atoms}'", path)
    return {
        "structure_number": int(info["Structure number"]), "file": info.get("File name", ""), "n_atoms": n_atoms,
        "cohesive_energy": info.get("cohesive", math.nan), "total_energy": info.get("total", math.nan),
        "symbols": symbols, "positions": np.array(positions, dtype=float).reshape(-1, 3),
        "forces": np.array(forces, dtype=float).reshape(-1, 3) if with_forces else None,
        "lattice": np.array([lattice[k] for k in "abc"]) if len(lattice) == 3 else None,
        "relaxed": tables > 1,
    }
