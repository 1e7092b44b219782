"""Names of structures: the lists users give (a test split, one name a line), which structures they pick,
and the names aenet's one-name-a-line files can hold."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

from pyita.errors import InputError
from pyita.io.files import read_regular
from pyita.paths import file_keys


def refuse_line_breaks(sources) -> None:
    """A name with a line break cannot be listed in aenet's one-name-per-line files (generate.in, predict.in)."""
    for source in map(str, sources):
        if "\n" in source or "\r" in source:
            raise InputError("a line break in this name: aenet's file lists (one name per line) cannot hold it; "
                             "rename it", source)


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
