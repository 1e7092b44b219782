"""Names that users and files give to structure files, compared as files rather than as text."""

from __future__ import annotations

from pathlib import Path


def file_keys(name: str, base: str | Path | None = None) -> set[str]:
    """``name`` as written and as the file it names: resolved from the current folder and, for a relative
    name, from ``base`` (the folder of the list or generate.in that wrote it)."""
    keys = {name}
    try:
        keys.add(str(Path(name).resolve()))
        if base is not None and not Path(name).is_absolute():
            keys.add(str((Path(base) / name).resolve()))
    except OSError:
        pass
    return keys
