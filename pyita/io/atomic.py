"""All-or-nothing output: results appear under their final name only when complete."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from pyita.errors import PyitaError


@contextmanager
def atomic_output_dir(final: str | Path, overwrite: bool = False):
    """Yield a temporary sibling folder; on success it is renamed to ``final``, on error removed.

    A non-empty ``final`` is refused unless ``overwrite`` (then it is replaced only after success), so a
    failed run never leaves half an output behind nor damages an earlier one.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise PyitaError(f"{final} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not overwrite:
        raise PyitaError(f"output folder {final} is not empty (choose another, or --overwrite)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call ``write(temporary_path)``, then rename the result to ``path``: readers never see a partial file.

    The temporary sibling keeps ``path``'s suffix, for writers that choose a format by it (``np.savez``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary sibling and a rename."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
