"""aenet's XSF structure files, written as aenet 2.0.4 reads them: the energy line and the comments first (a
comment after the last atom line crashes aenet), then the cell and the atom lines in fixed-point digits.

``XsfTemplate`` formats a structure's cell and atom lines once, so that the many derived structures of one
parent are written by replacing only the atom lines that moved.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from pyita.io.xsf import aenet_lines
from pyita.structure import Structure

#: Fixed-point digits written for coordinates, forces and energies: the TiO2 files carry 8, so reading
#: and writing them back reproduces every value exactly.
DIGITS = 10
_NUM = f" %{DIGITS + 8}.{DIGITS}f"
_ROW3 = _NUM * 3
_ATOM4 = "%-3s" + _NUM * 3
_ATOM7 = "%-3s" + _NUM * 6


def _check_comment(comment: str) -> str:
    if "\n" in comment or "\r" in comment:
        raise ValueError(f"comment would span several lines: {comment!r}")
    lowered = comment.lower()
    if "total energy" in comment or "cohesive energy" in comment or (
            ("total energy" in lowered or "cohesive energy" in lowered) and "=" in comment):
        raise ValueError(f"comment would be read by aenet as an energy line: {comment!r}")
    return comment


class XsfTemplate:
    """A structure's XSF text split into parts, so many variants of it are written fast.

    The cell block and the atom lines are formatted once; ``text`` then adds an energy line and comments
    and replaces only the atom lines that moved (single-atom displacements change one line of N).
    ``format_xsf`` is ``XsfTemplate(structure, forces).text(...)``, so both give identical text.
    """

    def __init__(self, structure: Structure, forces: np.ndarray | None = None, _lines=None):
        if forces is None:
            forces = structure.forces if structure.forces is not None else structure.info.get("placeholder_forces")
        n = len(structure)
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            if forces.shape != (n, 3):
                raise ValueError(f"forces have shape {forces.shape}, expected ({n}, 3)")
            self._forces = forces.tolist()
        else:
            self._forces = None
        self.symbols = structure.symbols
        if _lines is not None:
            body, self.atom_lines = _lines
        else:
            if structure.cell is not None:
                body = ["CRYSTAL", "PRIMVEC"] + [_ROW3 % tuple(v) for v in structure.cell.tolist()]
                body += ["PRIMCOORD", f"{n} 1"]
            else:
                body = ["ATOMS"]
            self.atom_lines = self._atom_lines(structure.positions)
        self._body = body
        self._block = "\n".join(body + self.atom_lines) + "\n"
        # where atom line k starts in _block (start + cumulative length + k newlines), to splice in one
        # re-formatted line without joining all lines again
        self._start = len(self._block) - sum(map(len, self.atom_lines)) - len(self.atom_lines)
        self._cumulative = list(itertools.accumulate(map(len, self.atom_lines), initial=0))

    @classmethod
    def verbatim(cls, structure: Structure, lines: list[str], layout) -> XsfTemplate:
        """A template that keeps the file's own cell and atom lines (exactly the values read, in the file's
        own digits) and re-formats only moved atoms; ``layout`` from ``read_xsf_layout``, or None to
        format everything."""
        if layout is None or structure.forces is None:
            return cls(structure)
        body_start, atoms_start = layout
        atoms = aenet_lines(lines[atoms_start:atoms_start + len(structure)])
        return cls(structure, None, (aenet_lines(lines[body_start:atoms_start]), atoms))

    def _atom_lines(self, positions: np.ndarray) -> list[str]:
        symbols, forces = self.symbols, self._forces
        if forces is None:
            return [_ATOM4 % (s, x, y, z) for s, (x, y, z) in zip(symbols, positions.tolist())]
        return [_ATOM7 % (s, x, y, z, fx, fy, fz)
                for s, (x, y, z), (fx, fy, fz) in zip(symbols, positions.tolist(), forces)]

    def atom_line(self, k: int, xyz) -> str:
        """The line of atom ``k`` (0-based) at Cartesian position ``xyz``."""
        x, y, z = xyz
        if self._forces is None:
            return _ATOM4 % (self.symbols[k], x, y, z)
        fx, fy, fz = self._forces[k]
        return _ATOM7 % (self.symbols[k], x, y, z, fx, fy, fz)

    @staticmethod
    def _head(energy: float | None, comments, energy_kind: str) -> str:
        """Energy line, comment lines and the blank line before the cell/atoms part."""
        if energy_kind not in ("total", "cohesive"):
            raise ValueError(f"energy_kind must be 'total' or 'cohesive', not {energy_kind!r}")
        out = [] if energy is None else [f"# {energy_kind} energy = {energy:.{DIGITS}f} eV"]
        if comments:
            joined = "\x00".join(comments)
            if "\n" in joined or "\r" in joined or "energy" in joined.lower():
                for c in comments:
                    _check_comment(c)
            out += ["# " + c for c in comments]
        out.append("\n")
        return "\n".join(out)

    def text_one(self, energy: float | None, comments, energy_kind: str, k: int, xyz) -> str:
        """Full XSF text with only atom ``k`` moved to ``xyz`` (the hot path of single-atom augmentation)."""
        block = self._block
        start = self._start + self._cumulative[k] + k
        end = start + len(self.atom_lines[k])
        return self._head(energy, comments, energy_kind) + block[:start] + self.atom_line(k, xyz) + block[end:]

    def text(self, energy: float | None, comments=(), energy_kind: str = "total",
             positions: np.ndarray | None = None, moved: dict | None = None) -> str:
        """Full XSF text: ``positions`` (N×3) replace every atom position, ``moved`` {atom: xyz} some."""
        if moved and len(moved) == 1 and positions is None:
            ((k, xyz),) = moved.items()
            return self.text_one(energy, comments, energy_kind, k, xyz)
        head = self._head(energy, comments, energy_kind)
        if positions is not None:
            atoms = self._atom_lines(np.asarray(positions, dtype=np.float64).reshape(len(self.symbols), 3))
            return head + "\n".join(self._body + atoms) + "\n"
        if moved:
            atoms = list(self.atom_lines)
            for k, xyz in moved.items():
                atoms[k] = self.atom_line(k, xyz)
            return head + "\n".join(self._body + atoms) + "\n"
        return head + self._block


def format_xsf(structure: Structure, forces: np.ndarray | None = None) -> str:
    """XSF text for aenet. ``forces`` overrides the structure's own (e.g. placeholders for derived ones).

    Comment lines go first, after the energy line, because a comment after the last atom line crashes aenet.
    """
    return XsfTemplate(structure, forces).text(structure.energy, structure.comments, structure.energy_kind)


def write_xsf(path: str | Path, structure: Structure, forces: np.ndarray | None = None) -> None:
    """Write one XSF file (callers wanting atomicity write into a temporary folder)."""
    Path(path).write_text(format_xsf(structure, forces))
