"""Where an output may go, decided before any work: never onto, into or around what the run reads.

An output may not be, contain or lie inside an input file or folder, and may not be the current folder or
one of its parents (replacing those would delete the user's data). ``--overwrite`` replaces only an earlier
output of the same command, recognised by the record that command leaves in it, and only when the folder
holds nothing but what that record lists (a file a user added — an ``augmented.train``, a ``predict.in`` — is
named and the folder left alone). Every refusal is a PyitaError, raised before anything is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Callable, Iterable

from pyita.errors import PyitaError
from pyita.io.records import json_text

#: The record file each folder-writing command leaves in its output, holding ``"command": <name>`` and, under
#: ``FILES``, every file and folder it wrote there.
RECORDS = {"augment": "run.json", "predict": "summary.json", "check": "check.json",
           "aenet prepare": "pyita-aenet.json", "aenet export": "pyita-export.json", "md": "summary.json"}
FILES = "files"
#: Records of later commands that write into an earlier one's folder (``pyita aenet run`` into a prepared run
#: folder): their own name and the files they list under ``"outputs"`` belong to the folder too.
COMPANIONS = {"aenet prepare": ("pyita-aenet-run.json",)}


def data_inputs(data, source=None) -> list[Path]:
    """The files and folders that reading ``data`` (a data argument, opened as ``source``) touches."""
    paths = []
    if isinstance(data, (str, Path)) and os.path.exists(data):
        paths.append(Path(data))
    if source is not None:
        if source.generate_in is not None and source.generate_in.path is not None:
            paths.append(Path(source.generate_in.path))
        paths += list(source.xsf_paths or ())
        paths += [Path(p) for p in (source.archive, source.ase_path) if p is not None]
    return paths


def input_files_of(data) -> list[Path]:
    """``data_inputs`` of a data argument, or nothing for structures given in memory."""
    if not isinstance(data, (str, Path)):
        return []
    from pyita.io.sources import open_source

    return data_inputs(data, open_source(data, require_labels=False))


def _inside(path: str, folder: str) -> bool:
    """``path`` equals ``folder`` or lies below it (both absolute and resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def refuse_overlap(out: str | Path, inputs: Iterable[str | Path], option: str = "--out") -> None:
    """Refuse an output that is, contains or lies inside an input, or is the current folder or a parent."""
    real = os.path.realpath(out)
    cwd = os.path.realpath(os.getcwd())
    if _inside(cwd, real):
        what = "is the current folder" if cwd == real else "contains the current folder"
        raise PyitaError(f"{option} {out} {what}; choose a new folder for the output")
    resolved_dirs: dict[str, str] = {}   # thousands of input files share a few folders: resolve those once
    for item in inputs:
        item = os.fspath(item)
        folder, name = os.path.split(item)
        if folder not in resolved_dirs:
            resolved_dirs[folder] = os.path.realpath(folder or ".")
        path = os.path.join(resolved_dirs[folder], name)
        if _inside(path, real):
            what = "is" if path == real else "contains"
            kind = "folder" if os.path.isdir(path) else "file"
            raise PyitaError(f"{option} {out} {what} the input {kind} {item}; choose an output apart from "
                             "the inputs")
        if _inside(real, path):
            kind = "folder" if os.path.isdir(path) else "file"
            raise PyitaError(f"{option} {out} lies inside the input {kind} {item}; choose an output apart from "
                             "the inputs")


def _read_json(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def listing(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` as a relative POSIX path, sorted (symbolic links not followed)."""
    found = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        found += [(rel / name).as_posix() for name in dirs + files]
    return sorted(found)


def stamp_files(folder: Path, command: str) -> None:
    """Add to the record of ``command`` in ``folder`` the list of everything the folder holds (what
    ``--overwrite`` may later replace)."""
    path = folder / RECORDS[command]
    record = _read_json(path)
    if record is None:
        raise PyitaError(f"internal: {path} is not a JSON record")
    record[FILES] = [name for name in listing(folder) if name != RECORDS[command]]
    path.write_text(json_text(record, indent=2))


def foreign_entries(folder: Path, command: str) -> list[str] | None:
    """What ``folder`` holds beyond what the record of ``command`` (and its companions) lists; None when the
    record lists no files (written by an older PyITA), so nothing can be told apart."""
    record = _read_json(folder / RECORDS[command])
    if record is None or not isinstance(record.get(FILES), list):
        return None
    ours = {RECORDS[command], *map(str, record[FILES])}
    for name in COMPANIONS.get(command, ()):
        companion = _read_json(folder / name)
        if companion is not None:
            ours |= {name, *map(str, companion.get("outputs", []))}
    return [name for name in listing(folder) if name not in ours]


def refuse_foreign(folder: Path, command: str) -> None:
    """Refuse to replace ``folder`` when it holds anything its record does not list."""
    foreign = foreign_entries(folder, command)
    if foreign is None:
        raise PyitaError(f"--overwrite: {folder / RECORDS[command]} does not list the files `pyita {command}` "
                         f"wrote (an older PyITA made it), so what else {folder} holds cannot be told apart; "
                         "it was left untouched: remove it yourself or choose another --out")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise PyitaError(f"--overwrite replaces only what `pyita {command}` wrote, and {folder} also holds {shown}; "
                         "it was left untouched: move those away or choose another --out")


def _record_command(folder: Path, command: str) -> str | None:
    record = _read_json(folder / RECORDS[command])
    return None if record is None else record.get("command")


def guard_output(out: str | Path, inputs: Iterable[str | Path], command: str, overwrite: bool = False,
                 folder: bool = True, is_previous: Callable[[Path], bool] | None = None) -> None:
    """Check, before any work, that ``pyita <command>`` may write ``out`` (a folder, or a file).

    An existing non-empty ``out`` needs ``overwrite``, and is replaceable only when it is an earlier
    output of the same command: a folder whose record (``RECORDS``) names it, or a file ``is_previous``
    recognises.
    """
    out = Path(out)
    refuse_overlap(out, inputs)
    if not out.exists() and not out.is_symlink():
        return
    if folder and not out.is_dir():
        raise PyitaError(f"{out} exists and is not a folder")
    if not folder and out.is_dir():
        raise PyitaError(f"{out} is a folder; name a file for the output")
    if folder and not any(out.iterdir()):
        return
    if not overwrite:
        what = f"output folder {out} is not empty" if folder else f"{out} exists"
        raise PyitaError(f"{what} (choose another, or --overwrite to replace an earlier `pyita {command}` "
                         "output)")
    previous = _record_command(out, command) == command if folder else bool(is_previous and is_previous(out))
    if not previous:
        how = f"it holds no {RECORDS[command]} naming that command" if folder else \
            f"it is not a file `pyita {command}` wrote"
        raise PyitaError(f"--overwrite replaces only an earlier output of `pyita {command}`, and {out} is "
                         f"not one ({how}); it was left untouched")
    if folder:
        refuse_foreign(out, command)
