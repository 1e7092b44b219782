"""PyITA's bundled TiO2 sample data (GFN1-xTB labels, not DFT).

``tio2-diverse``: 169 strained/rattled rutile, anatase and brookite cells (12–48 atoms, some with O
vacancies), the regime of the real TiO2 set. ``tio2-md``: 150 Langevin-MD snapshots of one 48-atom rutile
cell at 400 K, whose energies spread over a few meV/atom: the regime where force information should pay.
Provenance and numbers: ``pyita/data/README.md``; made by ``scripts/make_sample_data.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
from pathlib import Path

from pyita.errors import InputError
from pyita.structure import LabelKeys, Structure

SAMPLE_SETS = ("tio2-diverse", "tio2-md")

_extracted = contextlib.ExitStack()  # keeps files extracted from a zipped install alive until exit
atexit.register(_extracted.close)


def sample_path(name: str = "tio2-diverse") -> Path:
    """Path of a bundled sample set (gzip'd extended XYZ)."""
    if name not in SAMPLE_SETS:
        raise InputError(f"unknown sample set {name!r}; valid names: {', '.join(SAMPLE_SETS)}", f"sample:{name}")
    resource = importlib.resources.files("pyita") / "data" / f"{name}.xyz.gz"
    if isinstance(resource, Path):
        path = resource
    else:  # e.g. imported from a zip: extract to a temporary file
        path = _extracted.enter_context(importlib.resources.as_file(resource))
    if not path.is_file():
        raise InputError(f"sample set {name!r} is missing from this installation (expected {path})")
    return path


def load_sample(name: str = "tio2-diverse", keys: LabelKeys | None = None) -> list[Structure]:
    """All structures of a bundled sample set, with energies (eV) and forces (eV/Å) (stored under ASE's own
    keys; ``keys`` as for any extended-XYZ file)."""
    import ase.io

    path = sample_path(name)
    return [Structure.from_ase(atoms, source=f"{name}[{i}]", keys=keys)
            for i, atoms in enumerate(ase.io.read(path, ":", format="extxyz"))]
