"""``pyita augment`` on disk: stream parents, write derived files, a generate.in and a manifest, atomically."""

from __future__ import annotations

from array import array
import os
import sys
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from pyita import __version__
from pyita.architecture import ChebyshevSetup
from pyita.augment.settings import DEFAULT_CONFIG_TYPE, AugmentSettings, check_config_type
from pyita.augment.derive import shortfall_message, why_nothing_made
from pyita.augment.strategies import copies_for, copies_total
from pyita.augment.workers import CHUNK, Job, worker_processes, workers_for, xsf_results
from pyita.augment.writers import MANIFEST_FIELDS, ExtxyzWriter, XsfWriter
from pyita.choices import FORMATS
from pyita.errors import InputError, PyitaError
from pyita.geometry import CloseAtomsWarning, close_atoms, warn_close_atoms
from pyita.io import DataSource, archive_members, match_names, open_source, read_name_list
from pyita.io.atomic import atomic_output_dir
from pyita.io.outputs import data_inputs, guard_output
from pyita.io.records import json_text
from pyita.progress import progress_bar
from pyita.reference import Composition, check_reference_energies
from pyita.structure import LabelKeys


def read_exclude_list(path: str | Path) -> set[str]:
    """Parent names to keep out of augmentation, one per line (``#`` comments allowed)."""
    return set(read_name_list(path, "exclude list"))


def _excluded_indices(names: list[str], exclude: set[str], listed: list[str] | None = None,
                      base: Path | None = None, source=None) -> set[int]:
    """Parents named by the exclude list: by their path, as generate.in's FILES lists them (``listed``), or
    by bare file name (``pyita.io.match_names``)."""
    candidates = [[name] + ([listed[k]] if listed is not None else []) for k, name in enumerate(names)]
    hits, unmatched = match_names(sorted(exclude), candidates, base)
    if unmatched:   # a test parent that slips through would be augmented into training: refuse, do not guess
        raise InputError(f"{len(unmatched)} of {len(exclude)} exclude entries match no parent, e.g. "
                         f"{unmatched[0]!r} (relative entries are taken from the list's own folder)", source)
    return hits


def _parent_names(source: DataSource) -> list[str]:
    """How parents are named in the manifest and provenance: absolute paths for files (so they stay valid
    from any folder), ``label[k]`` or ``archive:member`` otherwise."""
    if source.xsf_paths is not None:
        return [os.path.abspath(p) for p in source.xsf_paths]
    if source.archive is not None:
        return [f"{source.archive}:{m}" for m in archive_members(source.archive)]
    label = source.sample if source.sample is not None else str(source.ase_path)
    return [f"{label}[{k}]" for k in range(len(source))]


def _derived_stems(names: list[str]) -> list[str]:
    """File-name stem of each parent's derived files (``<stem>-tNNN.xsf``), unique over the data set."""
    stems, owners = [], {}
    for index, name in enumerate(names):
        base = os.path.basename(name.split("[")[0].rsplit(":", 1)[-1] if "[" in name or ":" in name else name)
        stem = os.path.splitext(base)[0] + (f"-{index:05d}" if "[" in name else "")
        if owners.setdefault(stem, index) != index:
            stem = f"{stem}-{index:05d}"
        stems.append(stem)
    return stems


def _excluded(source: DataSource, names: list[str], exclude_file: str | Path | None) -> set[int]:
    """Indices of the parents the exclude list names (none without a list), read before anything is written."""
    if not exclude_file:
        return set()
    return _excluded_indices(names, read_exclude_list(exclude_file),
                             source.generate_in.files if source.generate_in is not None else None,
                             Path(exclude_file).parent, exclude_file)


class _Tally:
    """What a run has made so far, parent by parent: the summary's counts and species, the parents due copies
    that gave none (the shortfall's reason), near-coincident atoms in the parents read in this process, and
    (``keep_labels``) the energy of each original not excluded, by composition, which the reference energies of
    an aenet training set may be fitted to (8 bytes per parent)."""

    def __init__(self, names: list[str], excluded: set[int], settings: AugmentSettings, keep_labels: bool = False):
        self.names, self.excluded, self.settings = names, excluded, settings
        self.counts = {"parents": len(names), "excluded": len(excluded), "augmented_parents": 0, "derived": 0}
        self.species: dict[str, None] = {}
        self.keep_labels, self._energies = keep_labels, {}
        self.rank = self.empty = 0  # parents seen that may be augmented; of those, ones due some that gave none
        self.close, self.unchecked, self.unchecked_names = [], [], []  # close atoms found; parents to check, names

    def add(self, index: int, parent, composition: Composition, n_derived: int) -> None:
        """Count one parent's result; parents read here (XSF files are read by the workers) are checked for
        close atoms in chunks."""
        self.species.update(dict.fromkeys(composition.species))
        if self.keep_labels and index not in self.excluded and not composition.is_derived \
                and composition.energy is not None:
            key = (composition.counts, composition.energy_kind)
            self._energies.setdefault(key, array("d")).append(composition.energy)
        self.counts["augmented_parents"] += n_derived > 0
        self.counts["derived"] += n_derived
        if index not in self.excluded:
            due = self.settings.strategy == "sequential" or copies_for(self.rank, self.settings.a) > 0
            self.empty += due and not n_derived
            self.rank += 1
        if parent is not None and not parent.is_derived:
            self.unchecked.append(parent)
            self.unchecked_names.append(self.names[index])
            if len(self.unchecked) == CHUNK:
                self._check_close()

    @property
    def labels(self) -> list[Composition]:
        """The originals kept for the reference-energy fit (grouped by composition)."""
        return [Composition(counts, energy, kind) for (counts, kind), energies in self._energies.items()
                for energy in energies]

    def _check_close(self) -> None:
        """Check the parents gathered so far for close atoms, together (much faster than one by one)."""
        self.close += [w for _, w in close_atoms(self.unchecked, self.unchecked_names)]
        self.unchecked, self.unchecked_names = [], []

    def close_atoms_found(self, caught: list[warnings.WarningMessage]) -> list:
        """All close-atoms findings, this process's and the workers' (``caught``), to be issued as one warning;
        the other caught warnings are issued again as they were."""
        self._check_close()
        for w in caught:
            if isinstance(w.message, CloseAtomsWarning):
                self.close.append(w.message)
            else:
                warnings.warn(w.message, stacklevel=3)
        return self.close

    def shortfall(self) -> tuple[int, str | None]:
        """The ⌊a·N⌋ derived structures asked for over the parents not excluded, and why fewer came, if they did."""
        n_used = len(self.names) - len(self.excluded)
        requested = copies_total(n_used, self.settings.a)
        if self.counts["derived"] >= requested:
            return requested, None
        return requested, shortfall_message(self.settings, requested, self.counts["derived"], n_used, self.empty)


@dataclass(frozen=True)
class OutputOptions:
    """How `pyita augment` writes, besides the structures: extended XYZ's ``config_type`` of derived frames; for XSF
    output from input other than a generate.in, the descriptor of the ``<Sym>.stp`` files (``ChebyshevSetup``'s
    defaults, as `pyita aenet prepare` and `pyita train`) and given TYPES energies (for any XSF output; the rest
    follow ``pyita.reference.resolve_references``)."""

    fmt: str = "xsf"
    config_type: str | None = None
    descriptor: ChebyshevSetup | None = None
    types: dict[str, float] | None = None

    def checked(self, source: DataSource) -> OutputOptions:
        """These options with their defaults filled in, or one error for an option the output cannot use."""
        if self.fmt == "extxyz":
            given = [name for name, value in (("--types", self.types), ("the descriptor options (--radial-rc …)",
                                                                         self.descriptor)) if value]
            if given:
                raise PyitaError(f"{' and '.join(given)} apply to --format xsf (aenet's generate.in and .stp files)")
            return replace(self, config_type=check_config_type(self.config_type or DEFAULT_CONFIG_TYPE))
        if self.config_type is not None:
            raise PyitaError("--config-type applies to --format extxyz (aenet's XSF files have no config_type)")
        if self.descriptor is not None and source.generate_in is not None:
            raise PyitaError(f"the descriptor options (--radial-rc …) apply to input without .stp files; "
                             f"{source.generate_in.path} names its own in SETUPS, which are copied")
        return replace(self, descriptor=self.descriptor or ChebyshevSetup(), types=check_reference_energies(self.types))


def _writer(options: OutputOptions, folder: Path, final_abs: Path, source: DataSource, only_derived: bool):
    """The writer of the chosen output format, writing into the temporary ``folder``."""
    if options.fmt == "xsf":
        return XsfWriter(folder, final_abs, source.xsf_paths is not None, source.generate_in, options.descriptor,
                         options.types)
    return ExtxyzWriter(folder, only_derived, options.config_type)


def _summary(data, options: OutputOptions, written: dict, only_derived: bool, exclude_file,
             settings: AugmentSettings, tally: _Tally, requested: int, shortfall: str | None, seconds: float,
             workers: int, keys: LabelKeys) -> dict:
    """The run summary saved as run.json and returned; ``written`` is what the writer chose (XSF: the .stp
    descriptor and the TYPES energies, with their origin)."""
    return {
        "pyita_version": __version__,
        "command": "augment",
        "data": str(data),
        "label_keys": keys.as_dict(),
        "output_format": options.fmt,
        "config_type": options.config_type,
        **({"aenet": written} if written else {}),
        "only_derived": only_derived,
        "exclude_file": None if exclude_file is None else str(exclude_file),
        "settings": settings.as_dict(),
        "counts": tally.counts,
        "derived_requested": requested,  # ⌊a·N⌋ over the parents not excluded
        "shortfall": requested - tally.counts["derived"],
        "shortfall_reason": shortfall,
        "species": list(tally.species),
        "seconds": seconds,
        "workers": workers,
        "python": sys.version.split()[0],
        "notes": "Derived structures carry first-order Taylor energies; their force columns (XSF) are "
                 "the parent's forces as placeholders, not labels.",
    }


def run_augment(data: str | Path, out: str | Path, settings: AugmentSettings, fmt: str = "xsf",
                only_derived: bool = False, exclude_file: str | Path | None = None,
                overwrite: bool = False, progress: bool = True, workers: int | None = None,
                keys: LabelKeys | None = None, output: OutputOptions | None = None) -> dict:
    """Augment every parent of ``data`` into the folder ``out``; returns the run summary (also run.json).

    Nothing appears under ``out`` unless the whole run succeeds; inputs are only read. Parents stream
    through in chunks (memory does not grow with their number, but for 8 bytes per parent when XSF output needs its
    TYPES energies fitted). ``workers`` > 1 spreads the XSF work over
    processes (default: ``default_workers``); the output is byte for byte the same for any number. ``keys``
    name the labels of an ASE file (``pyita.structure.LabelKeys``); ``output`` how to write besides the
    structures (``OutputOptions``; its ``fmt``, when given, replaces ``fmt``).
    """
    options = output or OutputOptions(fmt)
    fmt = options.fmt
    if fmt not in FORMATS:   # before the data is opened: a typo in the format is named first
        raise InputError(f"unknown output format {fmt!r}; choose {' or '.join(FORMATS)}")
    source = open_source(data, keys=keys)
    options = options.checked(source)
    guard_output(out, data_inputs(data, source) + ([exclude_file] if exclude_file else []), "augment",
                 overwrite)
    names = _parent_names(source)
    stems = _derived_stems(names)
    excluded = _excluded(source, names, exclude_file)
    out = Path(out)
    final_abs = out.resolve()
    start = time.perf_counter()
    # TYPES may need fitting: for input without a generate.in, or one whose TYPES are placeholders (all 0.0)
    fit = fmt == "xsf" and (source.generate_in is None or not any(source.generate_in.types.values()))
    tally = _Tally(names, excluded, settings, keep_labels=fit)
    workers = workers_for(workers, len(names), fmt, settings.strategy == "sequential" or source.xsf_paths is None)
    with atomic_output_dir(out, overwrite=overwrite, command="augment") as tmp, \
            open(tmp / "manifest.csv", "w", newline="") as manifest_file:
        manifest_file.write(",".join(MANIFEST_FIELDS) + "\r\n")
        writer = _writer(options, tmp, final_abs, source, only_derived)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with worker_processes(workers) as pool, \
                    progress_bar(len(names), "augment", "parents", enabled=progress) as advance:
                if fmt == "xsf":
                    job = Job(settings, writer.derived_dir, source.require_labels)
                    results = xsf_results(source, names, stems, excluded, job, pool, workers)
                else:
                    results = writer.results(source, names, stems, excluded, settings)
                for index, parent, composition, n_derived, files, rows in results:
                    if fmt == "xsf":
                        if not only_derived:
                            writer.parent(parent, names[index], stems[index])
                        writer.add_derived(files)
                    manifest_file.write(rows)
                    tally.add(index, parent, composition, n_derived)
                    advance(1)
        warn_close_atoms(tally.close_atoms_found(caught))
        if not tally.counts["derived"]:
            raise InputError(f"no derived structures: {why_nothing_made(source, settings, excluded)}", data)
        requested, shortfall = tally.shortfall()
        if shortfall is not None:
            warnings.warn(shortfall, stacklevel=2)
        written = writer.close(list(tally.species), tally.labels)
        summary = _summary(data, options, written, only_derived, exclude_file, settings, tally, requested, shortfall,
                           round(time.perf_counter() - start, 3), workers, source.keys)
        (tmp / "run.json").write_text(json_text(summary, indent=2))
    return summary
