"""aenet's XSF structure files, read exactly as aenet 2.0.4 reads them (``pyita.io.xsf_write`` writes them).

ASE's own xsf reader drops the energy comment and treats force columns as Hartree-based, so aenet data
needs this module. Rules (see docs/aenet-formats.md): the energy is a comment line containing lower-case
``total energy =`` or ``cohesive energy =``; periodic files have ``PRIMVEC`` (3 lines) and ``PRIMCOORD``
followed by ``N 1``; isolated ones an ``ATOMS`` block; atom lines are ``Sym x y z [Fx Fy Fz]`` in Å and
eV/Å with chemical symbols, never atomic numbers; the atom block ends at a blank line or end of file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols

from pyita.errors import InputError
from pyita.io.files import read_regular
from pyita.structure import Structure

_ENERGY = re.compile(r"(total|cohesive) energy\s*=\s*(\S+)")
_KNOWN_SYMBOLS = frozenset(chemical_symbols[1:])
_KEYWORDS = frozenset(("CRYSTAL", "MOLECULE", "SLAB", "POLYMER", "PRIMVEC", "CONVVEC", "PRIMCOORD", "ATOMS"))
#: First words of the provenance comment PyITA writes into derived files (followed by the parent's name).
DERIVED_MARK = "pyita derived structure: parent"
#: Comment on a parent copied into an XSF file by PyITA: the name derived structures use for it.
ORIGINAL_MARK = "pyita original source:"


def _number(token: str, path, lineno: int, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        try:  # Fortran double-precision exponent: 1.5d0
            value = float(token.replace("d", "e").replace("D", "e"))
        except ValueError:
            raise InputError(f"{what}: {token!r} is not a number", path, lineno) from None
    if not math.isfinite(value):
        raise InputError(f"{what}: {token!r} is not finite", path, lineno)
    return value


def _parse_energy(line: str, path, lineno: int) -> tuple[str, float] | None:
    """Energy from a comment line, or None when the line holds no aenet energy."""
    if "total energy" not in line and "cohesive energy" not in line:
        lowered = line.lower()
        if ("total energy" in lowered or "cohesive energy" in lowered) and "=" in line:
            raise InputError(
                "aenet recognises only lower-case 'total energy =' or 'cohesive energy =', "
                f"found {line.strip()!r}", path, lineno)
        return None
    match = _ENERGY.search(line)
    if match is None:
        raise InputError(f"energy line needs '=' and a number (aenet stops on this): {line.strip()!r}",
                         path, lineno)
    return match.group(1), _number(match.group(2), path, lineno, "energy")


def _parse_atom(line: str, path, lineno: int) -> tuple[str, list[float], list[float] | None]:
    fields = line.split()
    symbol = fields[0]
    if symbol not in _KNOWN_SYMBOLS:
        hint = " (aenet needs chemical symbols, not atomic numbers)" if symbol.isdigit() else ""
        raise InputError(f"unknown element symbol {symbol!r}{hint}", path, lineno)
    if len(fields) < 4:
        raise InputError(f"atom line needs 'Sym x y z [Fx Fy Fz]', got {len(fields)} fields", path, lineno)
    xyz = [_number(t, path, lineno, "coordinate") for t in fields[1:4]]
    if len(fields) >= 7:
        return symbol, xyz, [_number(t, path, lineno, "force") for t in fields[4:7]]
    if len(fields) > 4:
        raise InputError(f"atom line has {len(fields)} fields: 4 (no forces) or 7 expected", path, lineno)
    return symbol, xyz, None


def _read_text(path) -> str:
    """A whole small file as text, with plain system calls (no buffered file object); regular files only."""
    return read_regular(path).decode()


def read_xsf(path: str | Path, require_labels: bool = False) -> Structure:
    """Read one aenet XSF file. ``require_labels`` demands energy and forces, as generate.x does."""
    try:
        lines = _read_text(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path) from None
    return parse_xsf(lines, path, require_labels)


def parse_xsf(lines: list[str], path: str | Path = "<string>", require_labels: bool = False) -> Structure:
    """Parse XSF text already split into lines (line numbers in errors count from 1)."""
    return _parse(lines, path, require_labels)[0]


def read_xsf_layout(path: str | Path, require_labels: bool = False):
    """``read_xsf`` plus the file's lines and layout, for ``XsfTemplate.verbatim`` (None when the file is
    not in the plain form whose cell and atom lines can be reused as they are)."""
    try:
        lines = _read_text(path).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path) from None
    structure, layout = _parse(lines, path, require_labels)
    return structure, lines, layout


#: Whitespace other than a space (a tab, a no-break space, a carriage return…). Python, and so PyITA, reads it
#: as a field separator; aenet's generate.x splits XSF fields on spaces only and, with exit status 0, stops on
#: a tab after the chemical symbol ("incomplete output data") or a no-break space ("atom type not found").
_NOT_A_SPACE = re.compile(r"[^\S \n]")


def aenet_lines(lines: list[str]) -> list[str]:
    """XSF lines as aenet reads them: a line holding whitespace other than spaces gets its fields joined by
    single spaces (the fields PyITA read, so the same values, in the file's own digits)."""
    return [" ".join(line.split()) if _NOT_A_SPACE.search(line) else line for line in lines]


def aenet_text(path: str | Path) -> str | None:
    """None when aenet reads the XSF file ``path`` as it is, else its text respaced by ``aenet_lines``:
    what PyITA writes or copies for aenet must be what aenet reads."""
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path) from None
    if not _NOT_A_SPACE.search(text):
        return None
    return "\n".join(aenet_lines(text.splitlines())) + "\n"


def _parse(lines: list[str], path, require_labels: bool):
    """(structure, layout): layout = (first line of the cell/atoms part, first atom line) when that part
    holds nothing but keywords, numbers and clean 7-column atom lines, else None."""
    energy_kind, energy = "total", None
    body_start, clean = None, True
    comments: list[str] = []
    cell = None
    i, n = 0, len(lines)
    while i < n:
        stripped = lines[i].strip()
        lineno = i + 1
        is_comment = stripped.startswith("#") or not stripped
        keyword = None if is_comment else stripped.split()[0].upper()
        # aenet also takes the energy line without a leading '#'
        found = _parse_energy(stripped, path, lineno) if stripped and keyword not in _KEYWORDS else None
        if found:
            if energy is not None:
                raise InputError("second energy line", path, lineno)
            energy_kind, energy = found
        elif is_comment and stripped:
            comments.append(stripped.lstrip("#").strip())
        if is_comment or found:
            clean = body_start is None
            i += 1
            continue
        if body_start is None:
            body_start = i
        if keyword in ("CRYSTAL", "MOLECULE", "SLAB", "POLYMER"):
            i += 1
        elif keyword in ("PRIMVEC", "CONVVEC"):
            rows = _vectors(lines, i, keyword, path)
            if keyword == "PRIMVEC":
                cell = _cell(rows, path, lineno)
            i += 4
        elif keyword == "PRIMCOORD":
            if cell is None:
                raise InputError("PRIMCOORD before PRIMVEC", path, lineno)
            start = i + 2
            atoms, first_atom_line = _primcoord_atoms(lines, start, _atom_count(lines, i, path), path)
            break
        elif keyword == "ATOMS":
            start = i + 1
            atoms, first_atom_line = _atoms_block(lines, start, path, lineno)
            break
        else:
            raise InputError(f"unexpected line {stripped[:40]!r}", path, lineno)
    else:
        raise InputError("no atoms (no PRIMCOORD or ATOMS block)", path, n or None)
    structure = _finish(atoms, cell, energy, energy_kind, comments, path, require_labels, first_atom_line)
    return structure, (body_start, start) if clean and first_atom_line is None else None


def _need(lines: list[str], i: int, count: int, keyword: str, path) -> None:
    if i + count >= len(lines):
        raise InputError(f"file ends inside the {keyword} block (truncated?)", path, len(lines))


def _vectors(lines: list[str], i: int, keyword: str, path) -> list[list[float]]:
    """The three rows after a PRIMVEC or CONVVEC line ``i``."""
    _need(lines, i, 3, keyword, path)
    rows = []
    for k in range(1, 4):
        fields = lines[i + k].split()
        if len(fields) != 3:
            raise InputError(f"{keyword} row needs 3 numbers, got {len(fields)}", path, i + k + 1)
        rows.append([_number(t, path, i + k + 1, "lattice vector") for t in fields])
    return rows


def _cell(rows: list[list[float]], path, lineno: int) -> np.ndarray:
    (a, b, c), (d, e, f), (g, h, k) = rows
    if abs(a * (e * k - f * h) - b * (d * k - f * g) + c * (d * h - e * g)) < 1e-8:
        raise InputError("PRIMVEC lattice vectors are linearly dependent", path, lineno)
    return np.array(rows)


def _atom_count(lines: list[str], i: int, path) -> int:
    """The atom count on the line after PRIMCOORD (line ``i``)."""
    _need(lines, i, 1, "PRIMCOORD", path)
    fields = lines[i + 1].split()
    try:
        expected = int(fields[0])
    except (IndexError, ValueError):
        raise InputError("PRIMCOORD must be followed by 'N 1' (atom count)", path, i + 2) from None
    if expected <= 0:
        raise InputError(f"atom count must be positive, got {expected}", path, i + 2)
    return expected


def _primcoord_atoms(lines: list[str], start: int, expected: int, path):
    """(symbols, positions, forces) of the ``expected`` atom lines from ``start``, and the first atom line's
    number where they were read line by line (None: read in bulk by ``_fast_block``)."""
    n = len(lines)
    end = start + expected
    if end <= n and (end == n or not lines[end].strip()):
        fast = _fast_block(lines[start:end])
        if fast is not None:
            return fast, None
    i = start
    while i < n and lines[i].strip() and i - start < expected:
        i += 1
    atoms = _atom_rows(lines, start, i, path)   # a bad atom line is named before a wrong count
    if len(atoms) < expected:
        where = "the file ends" if i >= n else "a blank line ends the atom block"
        raise InputError(f"PRIMCOORD announces {expected} atoms (line {start}) but only "
                         f"{len(atoms)} follow before {where}", path, min(i + 1, n))
    if i < n and lines[i].strip():
        raise InputError(f"more than the {expected} atoms PRIMCOORD announces (or text directly "
                         "after the atom block, which aenet rejects)", path, i + 1)
    return _columns(atoms, start, path), start + 1


def _atoms_block(lines: list[str], start: int, path, lineno: int):
    """As ``_primcoord_atoms`` for an ATOMS block (line ``lineno``): the atom lines up to a blank line or the end."""
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    if end == start:
        raise InputError("ATOMS block holds no atoms", path, lineno)
    fast = _fast_block(lines[start:end])
    if fast is not None:
        return fast, None
    return _columns(_atom_rows(lines, start, end, path), start, path), start + 1


def _atom_rows(lines: list[str], start: int, end: int, path) -> list[tuple[str, list[float], list[float] | None]]:
    """Atom lines ``start`` to ``end`` read one by one, naming the line at fault."""
    return [_parse_atom(lines[i], path, i + 1) for i in range(start, end)]


def _columns(atoms, start: int, path):
    """(symbols, positions, forces) of the atoms read from line ``start`` on: forces on all of them or none."""
    with_forces = [f is not None for _, _, f in atoms]
    if any(with_forces) and not all(with_forces):
        raise InputError("forces missing on this atom line while other atoms have them", path,
                         start + 1 + with_forces.index(False))
    symbols = [a[0] for a in atoms]
    positions = np.array([a[1] for a in atoms])
    forces = np.array([a[2] for a in atoms]) if all(with_forces) else None
    return symbols, positions, forces


def _fast_block(block: list[str]):
    """(symbols, positions, forces) of a clean atom block with 7 fields per line, else None.

    The common case, parsed in bulk; anything unusual (missing or extra columns, Fortran exponents, NaN,
    unknown symbols) returns None and goes through the line-by-line parser, which reports the exact line.
    A misaligned line always shows up here as a non-symbol in a symbol column or a symbol in a number column.
    """
    tokens = " ".join(block).split()
    if not block or len(tokens) != 7 * len(block):
        return None
    symbols = tokens[0::7]
    if not _KNOWN_SYMBOLS.issuperset(symbols):
        return None
    del tokens[0::7]
    try:
        values = np.array(tokens, dtype=np.float64).reshape(-1, 6)
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    return symbols, values[:, :3], values[:, 3:]


def _finish(atoms, cell, energy, energy_kind, comments, path, require_labels, first_atom_line=None):
    symbols, positions, forces = atoms
    parent = next((c for c in comments if c.startswith(DERIVED_MARK)), None)
    if require_labels:
        if energy is None:
            raise InputError("no energy line ('# total energy = … eV'); aenet's generate.x needs one", path, 1)
        if forces is None and parent is None:
            raise InputError("no force columns; aenet's generate.x needs forces on every atom", path,
                             first_atom_line)
    info = {}
    original = next((c for c in comments if c.startswith(ORIGINAL_MARK)), None)
    if original is not None:
        info["original_source"] = original[len(ORIGINAL_MARK):].strip()
    if parent is not None:
        # A PyITA-derived file: its force columns are the parent's placeholders, not labels.
        info.update({"derived": True, "parent_source": parent[len(DERIVED_MARK):].strip()})
        if forces is not None:
            info["placeholder_forces"] = forces
        forces = None
    return Structure(
        symbols=symbols,
        positions=positions,
        cell=cell,
        energy=energy,
        forces=forces,
        energy_kind=energy_kind,
        source=str(path),
        comments=comments,
        info=info,
    )
