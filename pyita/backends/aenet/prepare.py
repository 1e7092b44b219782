"""``pyita aenet prepare``: link derived structures to their parents, hold out test parents with all
their derived structures, choose reference energies, and write the run folder."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np

from pyita.backends.aenet.folder import Entry, assign_names, write_run_folder
from pyita.backends.aenet.settings import RECORD, TEST_PARENTS, AenetSettings
from pyita.errors import InputError, PyitaError, whole_number
from pyita.io import match_names, read_name_list
from pyita.io.atomic import atomic_output_dir
from pyita.io.outputs import data_inputs, guard_output
from pyita.io.records import json_text
from pyita.progress import progress_bar
from pyita.reference import cohesive_per_atom, resolve_references
from pyita.structure import Structure, held_out_without_copies, link_parents


def _link_parents(structures: list[Structure], folder: Path | None,
                  aliases: list[str | None] | None = None) -> tuple[list[int], dict[int, str]]:
    """Original indices, and for every structure the key of the parent group it belongs to: ``#k`` for the
    original k (``pyita.structure.link_parents``), ``?name`` for derived structures of an absent parent."""
    groups = link_parents(structures, folder, aliases)
    originals = [k for k, s in enumerate(structures) if not s.is_derived]
    group = {k: f"#{g}" if g >= 0 else f"?{structures[k].info.get('parent_source') or ''}"
             for k, g in enumerate(groups)}
    unmatched = int((groups < 0).sum())
    if unmatched:
        warnings.warn(f"{unmatched} derived structures name a parent that is not in the data; they can only "
                      "be held out if the test-parents list names that parent", stacklevel=3)
    return originals, group


def _frame_sources(path: Path) -> list[str | None]:
    """The ``source`` each frame of an ASE-readable file records (PyITA's augmented extxyz stores the
    parent's file name there; ``Structure.from_ase`` replaces it with ``file[index]``)."""
    import ase.io

    try:
        return [atoms.info.get("source") for atoms in ase.io.iread(str(path), index=":")]
    except Exception:   # unreadable a second time: fall back to the names alone
        return []


def _read_names(path: str | Path) -> list[str]:
    return read_name_list(path, "test-parents list")


def _match_test_parents(entries: list[str], structures: list[Structure], originals: list[int],
                        group: dict[int, str], path, aliases: list[str | None] | None = None) -> set[str]:
    """Parent-group keys named by a test-parents list (``pyita.io.match_names``: exact name, the same file
    from the list's folder or the current one, or bare file name)."""
    candidates: dict[str, list[str]] = {}
    for k in originals:
        alias = aliases[k] if aliases and k < len(aliases) else None
        candidates[group[k]] = [n for n in (structures[k].source, alias) if n]
    for g in group.values():
        if g.startswith("?"):
            candidates.setdefault(g, [g[1:]])
    keys = list(candidates)
    hits, unmatched = match_names(entries, [candidates[key] for key in keys], Path(path).parent)
    if unmatched:
        warnings.warn(f"{len(unmatched)} of {len(set(entries))} test-parent entries match no structure, "
                      f"e.g. {unmatched[0]!r}", stacklevel=3)
    if not hits:
        raise InputError("no entry of the test-parents list matches a structure of the data", path)
    return {keys[k] for k in hits}


def _relative_to(name: str, folder: str) -> str:
    """A structure's name as seen from ``folder``: a file path relative to it, other names (``sample[3]``,
    ``archive:member``) as they are."""
    return os.path.relpath(os.path.abspath(name), folder) if os.path.isfile(name) else name


def _read_structures(source, data: str | Path, progress: bool) -> list[Structure]:
    """Every structure of the data in memory (the split and the folder need them all), refusing none."""
    structures: list[Structure] = []
    with progress_bar(len(source) if source.xsf_paths is not None else None, "read", "structures",
                      enabled=progress) as advance:
        for s in source:
            structures.append(s)
            advance(1)
    if not structures:
        raise InputError("no structures", data)
    return structures


def _drawn_test_parents(originals: list[int], test_fraction: float, seed: int) -> tuple[set[str], str]:
    """Without a test-parents list: a seeded random share of the originals (never all), and how they were chosen."""
    if test_fraction <= 0:
        return set(), "none"
    if len(originals) < 2:
        raise PyitaError("one original structure cannot be split into training and test sets")
    n_test = min(len(originals) - 1, max(1, round(test_fraction * len(originals))))
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(originals), size=n_test, replace=False))
    return {f"#{originals[i]}" for i in picked}, f"random {test_fraction:g} of the originals, seed {seed}"


def _split(structures: list[Structure], originals: list[int], group: dict[int, str],
           test_groups: set[str]) -> tuple[list[int], list[int], int]:
    """Training and test indices by parent group (a test parent's derived structures go to neither), and how
    many derived structures were dropped that way."""
    test_idx = [k for k in originals if group[k] in test_groups]
    if test_groups and not test_idx:
        raise PyitaError("the test parents are not in the data (at most their derived structures are), so "
                         "there is nothing to predict; give data that includes the original structures")
    train_idx = [k for k in range(len(structures)) if group[k] not in test_groups]
    test_idx = held_out_without_copies(structures, train_idx, test_idx)[0]
    dropped_derived = sum(1 for k in range(len(structures))
                          if group[k] in test_groups and structures[k].is_derived)
    return train_idx, test_idx, dropped_derived


def _species(source, structures: list[Structure]) -> list[str]:
    """The species present in the data, in generate.in's TYPES order first, then by first appearance."""
    species: list[str] = []
    if source.generate_in is not None:
        species = [s for s in source.generate_in.types]
    for s in structures:
        for sym in s.symbols:
            if sym not in species:
                species.append(sym)
    present = {sym for s in structures for sym in s.symbols}
    return [s for s in species if s in present]


def _below_max_energy(structures: list[Structure], train_idx: list[int], test_idx: list[int],
                      refs: dict[str, float], max_energy: float | None) -> tuple[list[int], list[int], dict]:
    """MAXENERGY applied by PyITA to training and test structures alike (aenet would filter training only),
    with how many of each it removed."""
    removed = {"train": 0, "test": 0}
    if max_energy is not None:
        keep = lambda k: cohesive_per_atom(structures[k], refs) <= max_energy  # noqa: E731
        removed["train"] = sum(1 for k in train_idx if not keep(k))
        removed["test"] = sum(1 for k in test_idx if not keep(k))
        train_idx = [k for k in train_idx if keep(k)]
        test_idx = [k for k in test_idx if keep(k)]
    return train_idx, test_idx, removed


def _settled_test_set(structures: list[Structure], train_idx: list[int], test_idx: list[int],
                      test_groups: set[str]) -> tuple[list[int], str]:
    """Refuse an empty training set; with no test set held out, predict the training originals instead, under a
    label that says these are not test errors."""
    if not train_idx:
        raise PyitaError("no training structures left (all are test parents, their derived structures, or "
                         "above --max-energy)")
    if test_idx:
        return test_idx, "held-out test parents"
    if test_groups:
        raise PyitaError("every test parent is above --max-energy: no test set left")
    return ([k for k in train_idx if not structures[k].is_derived],
            "training originals (no test set held out; these are NOT test errors)")


def _entries(structures: list[Structure], group: dict[int, str], indices: list[int], role: str, source,
             final: str) -> list[Entry]:
    """The run folder's entries for ``indices``: XSF files with forces are copied as they are, derived structures
    carry their parent's forces as placeholders, and names are relative to the folder ``final``."""
    def entry(k: int) -> Entry:
        s = structures[k]
        src = s.source or ""
        has_forces = s.forces is not None or "placeholder_forces" in s.info
        copy = Path(src) if (source.xsf_paths is not None and has_forces and src.lower().endswith(".xsf")
                             and Path(src).is_file()) else None
        parent = group[k]
        parent_name = structures[int(parent[1:])].source if parent.startswith("#") else parent[1:]
        placeholder = structures[int(parent[1:])].forces if parent.startswith("#") else None
        return Entry(s, copy_from=copy, placeholder=placeholder, role=role, source=_relative_to(src, final),
                     parent=_relative_to(parent_name, final) if s.is_derived else "")

    return [entry(k) for k in indices]


def _write_test_parents(folder: Path, structures: list[Structure], originals: list[int], group: dict[int, str],
                        test_groups: set[str], how: str, final: str) -> None:
    """The held-out parents as a list ``pyita augment --exclude`` reads back, so they are never augmented."""
    names = [_relative_to(structures[k].source, final) if structures[k].source else f"structure {k}"
             for k in originals if group[k] in test_groups]   # relative to the list's own folder, as read back
    names += [g[1:] for g in sorted(test_groups) if g.startswith("?")]
    (folder / TEST_PARENTS).write_text(
        "# Test parents held out of training by `pyita aenet prepare` (" + how + ").\n"
        "# Reuse with `pyita augment --exclude` so they are never augmented.\n" + "\n".join(names) + "\n")


def run_aenet_prepare(data: str | Path, out: str | Path, settings: AenetSettings | dict | None = None,
                      test_parents: str | Path | None = None, test_fraction: float = 0.1, seed: int = 0,
                      types: dict[str, float] | None = None, overwrite: bool = False,
                      progress: bool = True) -> dict:
    """Write an aenet run folder for ``data`` (anything ``pyita.io.open_source`` reads, including the
    augmented generate.in of ``pyita augment``). Returns the record also saved as pyita-aenet.json."""
    from pyita.io import open_source

    settings = AenetSettings.from_dict(settings)
    whole_number(seed, "seed", 0)   # numpy's generator takes no negative seed
    if test_parents is None and not 0 <= test_fraction < 1:
        raise PyitaError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    start = time.perf_counter()
    source = open_source(data)
    extra = [p for p in (test_parents, settings.initial_networks) if p is not None]
    guard_output(out, data_inputs(data, source) + extra, "aenet prepare", overwrite)
    structures = _read_structures(source, data, progress)
    folder = source.generate_in.folder if source.generate_in is not None else None
    aliases = _frame_sources(source.ase_path) if source.ase_path is not None else None
    originals, group = _link_parents(structures, folder, aliases)
    if not originals:
        raise InputError("the data holds only derived structures: PyITA needs the original (parent) "
                         "structures to hold out a test set and to predict", data)
    if test_parents is not None:
        test_groups = _match_test_parents(_read_names(test_parents), structures, originals, group, test_parents,
                                          aliases)
        how = f"listed in {test_parents}"
    else:
        test_groups, how = _drawn_test_parents(originals, test_fraction, seed)
    train_idx, test_idx, dropped_derived = _split(structures, originals, group, test_groups)
    # reference energies fitted on training structures only: no test information
    species = _species(source, structures)
    resolved = resolve_references(
        [structures[k] for k in train_idx if not structures[k].is_derived] or
        [structures[k] for k in train_idx], species, {**(settings.reference_energies or {}), **(types or {})},
        source.generate_in.types if source.generate_in is not None else {})
    train_idx, test_idx, removed = _below_max_energy(structures, train_idx, test_idx, resolved.energies,
                                                     settings.max_energy)
    test_idx, test_label = _settled_test_set(structures, train_idx, test_idx, test_groups)
    final = os.path.abspath(out)   # file names in the folder's files are relative to the folder itself
    train = _entries(structures, group, train_idx, "train", source, final)
    test = _entries(structures, group, test_idx, "test" if test_groups else "predicted-training-original", source,
                    final)
    assign_names(train, "xsf/train")
    assign_names(test, "xsf/test")
    record = {
        "command": "aenet prepare", "data": str(data), "split": how, "seed": seed,
        "reference_energies_origin": resolved.origin, "reference_energy_fit": resolved.fit,
        "counts": {"structures": len(structures), "originals": len(originals),
                   "derived": sum(1 for s in structures if s.is_derived),
                   "test_parents": len([k for k in originals if group[k] in test_groups]),
                   "derived_of_test_parents_dropped": dropped_derived,
                   "above_max_energy_train": removed["train"], "above_max_energy_test": removed["test"]},
    }
    with atomic_output_dir(out, overwrite=overwrite, command="aenet prepare") as tmp:
        if test_groups:
            _write_test_parents(tmp, structures, originals, group, test_groups, how, final)
        record = write_run_folder(tmp, train, test, species, resolved.energies, settings, record, test_label)
        record["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / RECORD).write_text(json_text(record, indent=2))
    return record
