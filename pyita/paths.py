"""Names that users and files give to structure files, compared as files rather than as text; and where PyITA
keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """PyITA's cache folder: ``$XDG_CACHE_HOME/pyita`` (the XDG base-directory rule, as other tools on Linux
    follow it), else ``~/.cache/pyita``. Each cache has a variable of its own that overrides this one."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # the specification says a relative path is invalid and to be ignored
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "pyita"


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
