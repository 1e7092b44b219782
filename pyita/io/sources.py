"""Reading structures from whatever users have: generate.in, XSF folders/globs, tar archives of XSF files,
ASE files, bundled samples.

``open_source`` names the data without reading it; iterating the returned source streams structures one by
one, so memory stays flat however many files a data set holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

import numpy as np

from pyita.errors import InputError
from pyita.io.archives import archive_members, iter_archive
from pyita.io.files import glob_paths, require_regular
from pyita.io.generate_in import GenerateIn, read_generate_in
from pyita.io.names import refuse_line_breaks
from pyita.io.xsf import read_xsf
from pyita.structure import LabelKeys, Structure

_GLOB_CHARS = set("*?[")
#: The problem of an InputError for a structure without the forces a command needs.
NO_FORCES = "structure has no forces"


def check_labels(structure: Structure, required: bool = True) -> Structure:
    """Demand finite positions, and a finite energy and finite forces where present; with ``required``, their
    presence too (derived structures: the energy only). A label that is there but not finite is refused
    even where labels are optional (``pyita predict``): it is damage, not the absence of a label."""
    where = structure.source
    if required and structure.energy is None:
        raise InputError("structure has no energy", where)
    if structure.energy is not None and not math.isfinite(structure.energy):
        raise InputError(f"energy {structure.energy} is not finite", where)
    if required and structure.forces is None and not structure.is_derived:
        raise InputError(NO_FORCES, where)
    if not np.isfinite(structure.positions).all() or (
            structure.forces is not None and not np.isfinite(structure.forces).all()):
        raise InputError("positions or forces contain NaN or inf", where)
    return structure


@dataclass
class DataSource:
    """A named set of structures; exactly one of ``xsf_paths``, ``archive``, ``ase_path``, ``sample`` is set."""

    description: str
    xsf_paths: list[Path] | None = None
    archive: Path | None = None
    ase_path: Path | None = None
    sample: str | None = None
    generate_in: GenerateIn | None = None
    require_labels: bool = True
    keys: LabelKeys = LabelKeys()

    def __iter__(self) -> Iterator[Structure]:
        if self.xsf_paths is not None:
            for path in self.xsf_paths:
                yield self._checked(read_xsf(path, require_labels=self.require_labels))
        elif self.archive is not None:
            yield from map(self._checked, iter_archive(self.archive, self.require_labels))
        elif self.sample is not None:
            from pyita.sample import load_sample

            yield from map(self._checked, load_sample(self.sample, self.keys))
        else:
            yield from map(self._checked, _iter_ase(self.ase_path, self.keys))

    def __len__(self) -> int:
        if self.xsf_paths is not None:
            return len(self.xsf_paths)
        if self.archive is not None:
            return len(archive_members(self.archive))
        return sum(1 for _ in self._frames())

    def _frames(self):
        if self.sample is not None:
            from pyita.sample import load_sample

            return load_sample(self.sample, self.keys)
        return _iter_ase(self.ase_path, self.keys)

    def _checked(self, structure: Structure) -> Structure:
        return check_labels(structure, required=self.require_labels)


def _iter_ase(path: Path, keys: LabelKeys) -> Iterator[Structure]:
    import ase.io

    k = -1
    try:
        for k, atoms in enumerate(ase.io.iread(str(path), index=":")):
            if not len(atoms):  # as an XSF file without atoms: nothing to label, featurize or predict
                raise InputError("structure has no atoms", f"{path}[{k}]")
            yield Structure.from_ase(atoms, source=f"{path}[{k}]", keys=keys)
    except InputError:
        raise
    except Exception as exc:  # ASE raises many types for unreadable files
        raise InputError(f"ASE cannot read this file: {exc}", path) from None
    if k < 0:
        raise InputError("file holds no structures", path)


def open_source(spec: str | Path, require_labels: bool = True, keys: LabelKeys | None = None) -> DataSource:
    """Interpret a data argument: ``sample[:name]``, a generate.in, a folder or glob of XSF, or an ASE file.
    ``keys`` name the labels of an ASE file (``LabelKeys``); XSF files have no keys, so naming some for them is
    refused rather than ignored."""
    keys = keys or LabelKeys()
    source = _open_source(spec, require_labels)
    if source.ase_path is None and source.sample is None and keys != LabelKeys():
        named = " and ".join(f"--{what}-key {key}" for what, key in (("energy", keys.energy), ("forces", keys.forces))
                             if key is not None)
        raise InputError(f"{named} applies to ASE files (extended XYZ…); XSF files have no label keys", spec)
    source.keys = keys
    return source


def _open_source(spec: str | Path, require_labels: bool) -> DataSource:
    text = str(spec)
    if text == "sample" or text.startswith("sample:"):
        from pyita.sample import sample_path

        name = text.partition(":")[2] or "tio2-diverse"
        sample_path(name)   # an unknown name is refused now, before any output exists
        return DataSource(f"bundled sample {name}", sample=name, require_labels=require_labels)
    if _GLOB_CHARS & set(text):
        matches = sorted(Path(p) for p in glob_paths(text))
        matches = [p for p in matches if not p.is_dir()]
        for p in matches:
            require_regular(p)
        if not matches:
            raise InputError(f"no files match the pattern {text!r}")
        if all(p.suffix.lower() == ".xsf" for p in matches):
            refuse_line_breaks(matches)
            return DataSource(text, xsf_paths=matches, require_labels=require_labels)
        raise InputError(f"pattern {text!r} matches non-XSF files; give one ASE-readable file instead")
    path = Path(text)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        files = sorted(path.glob("*.xsf"))
        if not files:
            raise InputError("folder holds no .xsf files", path)
        refuse_line_breaks(files)
        for p in files:
            require_regular(p)
        return DataSource(str(path), xsf_paths=files, require_labels=require_labels)
    require_regular(path)
    if path.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        if not archive_members(path, warn=True):
            raise InputError("archive holds no .xsf files", path)
        return DataSource(str(path), archive=path, require_labels=require_labels)
    if path.suffix.lower() == ".xsf":
        refuse_line_breaks([path])
        return DataSource(str(path), xsf_paths=[path], require_labels=require_labels)
    if path.suffix.lower() == ".in" or _looks_like_generate_in(path):
        gen = read_generate_in(path)
        return DataSource(str(path), xsf_paths=gen.resolved_files(), generate_in=gen,
                          require_labels=require_labels)
    return DataSource(str(path), ase_path=path, require_labels=require_labels)


def _looks_like_generate_in(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    words = {line.split()[0] for line in head.splitlines() if line.split()}
    return "FILES" in words and ("TYPES" in words or "OUTPUT" in words)


def read_structures(spec: str | Path, require_labels: bool = True, keys: LabelKeys | None = None) -> list[Structure]:
    """All structures of a data argument as a list (see ``open_source`` for what it accepts)."""
    return list(open_source(spec, require_labels=require_labels, keys=keys))
