"""Reading structures from whatever users have: generate.in, XSF folders/globs, ASE files, bundled samples.

``open_source`` names the data without reading it; iterating the returned source streams structures one by
one, so memory stays flat however many files a data set holds.
"""

from __future__ import annotations

import lzma
import math
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pyita.errors import InputError
from pyita.io.files import glob_paths, read_regular, require_regular
from pyita.io.generate_in import GenerateIn, read_generate_in
from pyita.io.xsf import parse_xsf, read_xsf, write_xsf
from pyita.paths import file_keys
from pyita.structure import Structure

__all__ = ["DataSource", "open_source", "read_structures", "read_xsf", "write_xsf", "read_generate_in",
           "check_labels"]

_GLOB_CHARS = set("*?[")


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
        raise InputError("structure has no forces", where)
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

    def __iter__(self) -> Iterator[Structure]:
        if self.xsf_paths is not None:
            for path in self.xsf_paths:
                yield self._checked(read_xsf(path, require_labels=self.require_labels))
        elif self.archive is not None:
            yield from map(self._checked, _iter_archive(self.archive, self.require_labels))
        elif self.sample is not None:
            from pyita.sample import load_sample

            yield from map(self._checked, load_sample(self.sample))
        else:
            yield from map(self._checked, _iter_ase(self.ase_path))

    def __len__(self) -> int:
        if self.xsf_paths is not None:
            return len(self.xsf_paths)
        if self.archive is not None:
            return len(archive_members(self.archive))
        return sum(1 for _ in self._frames())

    def _frames(self):
        if self.sample is not None:
            from pyita.sample import load_sample

            return load_sample(self.sample)
        return _iter_ase(self.ase_path)

    def _checked(self, structure: Structure) -> Structure:
        return check_labels(structure, required=self.require_labels)


#: What reading a damaged, truncated or foreign archive raises (tarfile lets its decompressors' errors through).
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError)


def _xsf_members(tar: tarfile.TarFile, archive) -> tuple[list[tarfile.TarInfo], list[str]]:
    """The XSF members of an open archive (regular files and hard links), and the other members named
    ``.xsf`` (symbolic links, FIFOs, devices: not read). Two members of one name are refused: a reader
    keeps only one of them, and another structure would be recorded under the name."""
    members, skipped, seen = [], [], set()
    for m in tar:
        if m.isdir() or not m.name.lower().endswith(".xsf"):
            continue
        if m.name in seen:
            raise InputError(f"two members are named {m.name!r}; give each structure its own name", archive)
        seen.add(m.name)
        if m.isfile() or m.islnk():
            members.append(m)
        else:
            skipped.append(m.name)
    return members, skipped


def archive_members(archive: Path, warn: bool = False) -> list[str]:
    """Names of the XSF files inside a tar archive, sorted (``warn``: about members named .xsf that are
    not files and are left out)."""
    try:
        with tarfile.open(archive) as tar:
            members, skipped = _xsf_members(tar, archive)
    except _ARCHIVE_ERRORS as exc:
        raise _unreadable(archive, exc) from None
    if warn and skipped:
        warnings.warn(f"{archive}: {len(skipped)} members named .xsf are not regular files (symbolic links, "
                      f"FIFOs or devices) and are left out, e.g. {skipped[0]!r}", stacklevel=3)
    names = sorted(m.name for m in members)
    _refuse_line_breaks(f"{archive}:{name}" for name in names)
    return names


def _unreadable(archive: Path, exc: Exception) -> InputError:
    if isinstance(exc, tarfile.ReadError) and "could not be opened" in str(exc):   # tarfile lists every try
        return InputError("cannot read archive: " + ("the file is empty" if archive.stat().st_size == 0 else
                          "not a tar archive (plain, gzip, bzip2 or xz)"), archive)
    if isinstance(exc, EOFError):
        return InputError(f"cannot read archive: it ends early, truncated? ({exc})", archive)
    return InputError(f"cannot read archive: {exc or type(exc).__name__}", archive)


def _refuse_line_breaks(sources) -> None:
    """A name with a line break cannot be listed in aenet's one-name-per-line files (generate.in, predict.in)."""
    for source in map(str, sources):
        if "\n" in source or "\r" in source:
            raise InputError("a line break in this name: aenet's file lists (one name per line) cannot hold it; "
                             "rename it", source)


def _iter_archive(archive: Path, require_labels: bool) -> Iterator[Structure]:
    """XSF files straight from a tar(.gz) archive, in name order, without unpacking to disk.

    The texts are read in one pass (compressed archives cannot seek backwards cheaply) and parsed lazily.
    """
    try:
        with tarfile.open(archive) as tar:
            texts = {m.name: tar.extractfile(m).read() for m in _xsf_members(tar, archive)[0]}
    except _ARCHIVE_ERRORS + (KeyError,) as exc:   # KeyError: a hard link to a member that is not there
        raise _unreadable(archive, exc) from None
    for name in sorted(texts):
        try:
            text = texts.pop(name).decode()
        except UnicodeDecodeError as exc:
            raise InputError(f"cannot read: {exc}", f"{archive}:{name}") from None
        yield parse_xsf(text.splitlines(), f"{archive}:{name}", require_labels)


def _iter_ase(path: Path) -> Iterator[Structure]:
    import ase.io

    k = -1
    try:
        for k, atoms in enumerate(ase.io.iread(str(path), index=":")):
            if not len(atoms):  # as an XSF file without atoms: nothing to label, featurize or predict
                raise InputError("structure has no atoms", f"{path}[{k}]")
            yield Structure.from_ase(atoms, source=f"{path}[{k}]")
    except InputError:
        raise
    except Exception as exc:  # ASE raises many types for unreadable files
        raise InputError(f"ASE cannot read this file: {exc}", path) from None
    if k < 0:
        raise InputError("file holds no structures", path)


def open_source(spec: str | Path, require_labels: bool = True) -> DataSource:
    """Interpret a data argument: ``sample[:name]``, a generate.in, a folder or glob of XSF, or an ASE file."""
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
            _refuse_line_breaks(matches)
            return DataSource(text, xsf_paths=matches, require_labels=require_labels)
        raise InputError(f"pattern {text!r} matches non-XSF files; give one ASE-readable file instead")
    path = Path(text)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir():
        files = sorted(path.glob("*.xsf"))
        if not files:
            raise InputError("folder holds no .xsf files", path)
        _refuse_line_breaks(files)
        for p in files:
            require_regular(p)
        return DataSource(str(path), xsf_paths=files, require_labels=require_labels)
    require_regular(path)
    if path.name.lower().endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        if not archive_members(path, warn=True):
            raise InputError("archive holds no .xsf files", path)
        return DataSource(str(path), archive=path, require_labels=require_labels)
    if path.suffix.lower() == ".xsf":
        _refuse_line_breaks([path])
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


def read_name_list(path: str | Path, what: str = "name list") -> list[str]:
    """Names one per line (structure paths, e.g. a test split); blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        lines = read_regular(path).decode().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what}: {exc}", path) from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def match_names(entries: Sequence[str], candidates: Sequence[Sequence[str]],
                base: str | Path | None = None) -> tuple[set[int], list[str]]:
    """Which candidates a list of names (``read_name_list``) picks, and the entries that pick none.

    Each candidate is known by one or more names (a structure's file, the text generate.in lists it by, a
    frame's recorded source…). An entry picks a candidate when it is one of those names, names the same file
    (a relative entry taken from ``base``, the list's own folder, or from the current folder), or, for an
    entry without '/', is the bare file name of one of them.
    """
    wanted = {entry: file_keys(entry, base) if "/" in entry else {entry} for entry in entries}
    keys_of_entry = {key: entry for entry, keys in wanted.items() for key in keys}
    bare = {entry for entry in entries if "/" not in entry}
    hits, used = set(), set()
    for k, names in enumerate(candidates):
        names = [n for n in names if n]
        keys = set(names) | {str(Path(n).resolve()) for n in names}
        found = {keys_of_entry[key] for key in keys & keys_of_entry.keys()} | \
            {Path(n).name for n in names} & bare
        if found:
            hits.add(k)
            used |= found
    return hits, [entry for entry in entries if entry not in used]


def read_structures(spec: str | Path, require_labels: bool = True) -> list[Structure]:
    """All structures of a data argument as a list (see ``open_source`` for what it accepts)."""
    return list(open_source(spec, require_labels=require_labels))
