"""``pyita aenet prepare``: link derived structures to their parents, hold out test parents with all
their derived structures, choose reference energies, and write the run folder."""

from __future__ import annotations

import json
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
    structures: list[Structure] = []
    with progress_bar(len(source) if source.xsf_paths is not None else None, "read", "structures",
                      enabled=progress) as advance:
        for s in source:
            structures.append(s)
            advance(1)
    if not structures:
        raise InputError("no structures", data)
    folder = source.generate_in.folder if source.generate_in is not None else None
    aliases = _frame_sources(source.ase_path) if source.ase_path is not None else None
    originals, group = _link_parents(structures, folder, aliases)
    if not originals:
        raise InputError("the data holds only derived structures: PyITA needs the original (parent) "
                         "structures to hold out a test set and to predict", data)
    # ---- the split, by parent
    if test_parents is not None:
        test_groups = _match_test_parents(_read_names(test_parents), structures, originals, group, test_parents,
                                          aliases)
        how = f"listed in {test_parents}"
    elif test_fraction > 0:
        if len(originals) < 2:
            raise PyitaError("one original structure cannot be split into training and test sets")
        n_test = min(len(originals) - 1, max(1, round(test_fraction * len(originals))))
        rng = np.random.default_rng(seed)
        picked = sorted(rng.choice(len(originals), size=n_test, replace=False))
        test_groups = {f"#{originals[i]}" for i in picked}
        how = f"random {test_fraction:g} of the originals, seed {seed}"
    else:
        test_groups = set()
        how = "none"
    test_idx = [k for k in originals if group[k] in test_groups]
    if test_groups and not test_idx:
        raise PyitaError("the test parents are not in the data (at most their derived structures are), so "
                         "there is nothing to predict; give data that includes the original structures")
    train_idx = [k for k in range(len(structures)) if group[k] not in test_groups]
    test_idx = held_out_without_copies(structures, train_idx, test_idx)[0]
    dropped_derived = sum(1 for k in range(len(structures))
                          if group[k] in test_groups and structures[k].is_derived)
    # ---- species and reference energies (fitted on training structures only: no test information)
    species: list[str] = []
    if source.generate_in is not None:
        species = [s for s in source.generate_in.types]
    for s in structures:
        for sym in s.symbols:
            if sym not in species:
                species.append(sym)
    present = {sym for s in structures for sym in s.symbols}
    species = [s for s in species if s in present]
    resolved = resolve_references(
        [structures[k] for k in train_idx if not structures[k].is_derived] or
        [structures[k] for k in train_idx], species, {**(settings.reference_energies or {}), **(types or {})},
        source.generate_in.types if source.generate_in is not None else {})
    refs = resolved.energies
    # ---- MAXENERGY, applied by PyITA to training and test structures alike (aenet would filter training only)
    removed = {"train": 0, "test": 0}
    if settings.max_energy is not None:
        keep = lambda k: cohesive_per_atom(structures[k], refs) <= settings.max_energy  # noqa: E731
        removed["train"] = sum(1 for k in train_idx if not keep(k))
        removed["test"] = sum(1 for k in test_idx if not keep(k))
        train_idx = [k for k in train_idx if keep(k)]
        test_idx = [k for k in test_idx if keep(k)]
    if not train_idx:
        raise PyitaError("no training structures left (all are test parents, their derived structures, or "
                         "above --max-energy)")
    test_label = "held-out test parents"
    if not test_idx:
        if test_groups:
            raise PyitaError("every test parent is above --max-energy: no test set left")
        test_label = "training originals (no test set held out; these are NOT test errors)"
        test_idx = [k for k in train_idx if not structures[k].is_derived]

    final = os.path.abspath(out)   # file names in the folder's files are relative to the folder itself

    def entry(k: int, role: str) -> Entry:
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

    train = [entry(k, "train") for k in train_idx]
    test = [entry(k, "test" if test_groups else "predicted-training-original") for k in test_idx]
    assign_names(train, "xsf/train")
    assign_names(test, "xsf/test")
    n_derived = sum(1 for s in structures if s.is_derived)
    record = {
        "command": "aenet prepare", "data": str(data), "split": how, "seed": seed,
        "reference_energies_origin": resolved.origin, "reference_energy_fit": resolved.fit,
        "counts": {"structures": len(structures), "originals": len(originals), "derived": n_derived,
                   "test_parents": len([k for k in originals if group[k] in test_groups]),
                   "derived_of_test_parents_dropped": dropped_derived,
                   "above_max_energy_train": removed["train"], "above_max_energy_test": removed["test"]},
    }
    with atomic_output_dir(out, overwrite=overwrite, command="aenet prepare") as tmp:
        if test_groups:   # names relative to the list's own folder, as they are read back
            names = [_relative_to(structures[k].source, final) if structures[k].source else f"structure {k}"
                     for k in originals if group[k] in test_groups]
            names += [g[1:] for g in sorted(test_groups) if g.startswith("?")]
            (tmp / TEST_PARENTS).write_text(
                "# Test parents held out of training by `pyita aenet prepare` (" + how + ").\n"
                "# Reuse with `pyita augment --exclude` so they are never augmented.\n" + "\n".join(names) + "\n")
        record = write_run_folder(tmp, train, test, species, refs, settings, record, test_label)
        record["seconds"] = round(time.perf_counter() - start, 3)
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record
