"""Data is read from regular files only, and found without endless searches.

A FIFO blocks its reader until someone writes to it, and a device such as /dev/zero never ends, so either,
named as data (directly, through a symbolic link, in a folder, a glob or a generate.in), would hang a
command or fill its memory instead of failing it with one line. A ``**`` glob must not follow symbolic links
to folders: one link to a parent folder makes Python's own recursive glob search without end.
"""

from __future__ import annotations

import glob as globmod
import os
import stat

from pyita.errors import InputError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str | None:
    """What a file of this mode is when it is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path) -> str | None:
    """What ``path`` is (symbolic links followed) when it exists and is not a regular file, else None."""
    try:
        return _kind(os.stat(path).st_mode)
    except (OSError, ValueError):
        return None


def refusal(path, kind: str) -> InputError:
    return InputError(f"is {kind}, not a regular file; PyITA reads data only from regular files", path)


def require_regular(path) -> None:
    """Refuse ``path`` when it is a FIFO, a device or anything else but a regular file (see the module)."""
    kind = not_regular(path)
    if kind is not None:
        raise refusal(path, kind)


def read_regular(path) -> bytes:
    """The bytes of the regular file ``path``; anything else is refused without blocking (opened
    non-blocking and checked on the open descriptor, so a file replaced after a check cannot hang the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise refusal(path, kind)
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def glob_paths(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` does not enter symbolic links to folders
    (as ``pathlib`` does not), so a link loop cannot make the search endless."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return globmod.glob(pattern)
    k = parts.index("**")
    head, rest = os.sep.join(parts[:k]), os.sep.join(parts[k + 1:])
    bases = globmod.glob(head) if k and globmod.has_magic(head) else [head] if k else [""]
    found = []
    for base in bases:
        if not os.path.isdir(base or "."):
            continue
        if not rest and base:
            found.append(os.path.join(base, ""))   # "d/**" also matches "d/" itself
        for folder, subfolders, _ in os.walk(base or os.curdir):   # symbolic links to folders: not entered
            subfolders[:] = [s for s in subfolders if not s.startswith(".")]   # as glob's ``**``
            if base == "":
                folder = os.path.relpath(folder)
                folder = "" if folder == os.curdir else folder
            found += glob_paths(os.path.join(globmod.escape(folder), rest or "*"))
    return found
