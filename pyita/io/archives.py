"""XSF files inside tar archives (plain, gzip, bzip2 or xz), listed and read without unpacking to disk."""

from __future__ import annotations

import lzma
import tarfile
import warnings
import zlib
from pathlib import Path
from collections.abc import Iterator

from pyita.errors import InputError
from pyita.io.names import refuse_line_breaks
from pyita.io.xsf import parse_xsf
from pyita.structure import Structure


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
    refuse_line_breaks(f"{archive}:{name}" for name in names)
    return names


def _unreadable(archive: Path, exc: Exception) -> InputError:
    if isinstance(exc, tarfile.ReadError) and "could not be opened" in str(exc):   # tarfile lists every try
        return InputError("cannot read archive: " + ("the file is empty" if archive.stat().st_size == 0 else
                          "not a tar archive (plain, gzip, bzip2 or xz)"), archive)
    if isinstance(exc, EOFError):
        return InputError(f"cannot read archive: it ends early, truncated? ({exc})", archive)
    return InputError(f"cannot read archive: {exc or type(exc).__name__}", archive)


def iter_archive(archive: Path, require_labels: bool) -> Iterator[Structure]:
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
