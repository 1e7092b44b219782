"""``pyita augment`` on disk: stream parents, write derived files, a generate.in and a manifest, atomically."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
import warnings
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from pyita import __version__
from pyita.augment import AugmentSettings, describe, iter_moves, moves_for, shortfall_message, why_nothing_made
from pyita.augment.strategies import SequentialPlan, copies_for, copies_total
from pyita.augment.taylor import displaced
from pyita.errors import InputError, PyitaError
from pyita.io import DataSource, archive_members, match_names, open_source, read_name_list
from pyita.io.atomic import atomic_output_dir
from pyita.io.generate_in import GenerateIn, format_generate_in
from pyita.io.outputs import data_inputs, guard_output
from pyita.io.xsf import (ORIGINAL_MARK, XsfTemplate, aenet_text, format_xsf, read_xsf,
                          read_xsf_layout)
from pyita.parallel import plan_workers, usable_cores, worker_pool
from pyita.progress import progress_bar
from pyita.structure import CloseAtomsWarning, close_atoms, warn_close_atoms


FORMATS = ("xsf", "extxyz")
MANIFEST_FIELDS = ["file", "parent_index", "parent", "copy", "atom", "direction", "dx", "dy", "dz",
                   "taylor_shift_eV", "energy_eV", "strategy", "delta", "seed"]


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


#: Parents per task sent to a worker process, and tasks in flight per worker (bounds memory).
CHUNK = 64
AHEAD = 3
#: Below this many parents a single process is faster than starting workers.
PARALLEL_MIN_PARENTS = 256


def default_workers(n_parents: int, fmt: str = "xsf") -> int:
    """Worker processes for a run: the environment variable PYITA_WORKERS if set, else, for large XSF jobs,
    the idle cores (usable cores minus the load average, at most 4), else 1.

    Idle cores only: on a busy machine extra processes add work (forking, sending results back, several
    processes creating files in one folder) and gain nothing.
    """
    if fmt != "xsf" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if os.environ.get("PYITA_WORKERS"):
        try:
            return max(1, int(os.environ["PYITA_WORKERS"]))
        except ValueError:
            raise PyitaError(f"PYITA_WORKERS must be a whole number, not {os.environ['PYITA_WORKERS']!r}") from None
    if n_parents < PARALLEL_MIN_PARENTS:
        return 1
    cores = usable_cores()
    try:
        idle = cores - round(os.getloadavg()[0])
    except (AttributeError, OSError):
        idle = cores
    return max(1, min(idle, 4))


def augment_to_disk(data: str | Path, out: str | Path, settings: AugmentSettings, fmt: str = "xsf",
                    only_derived: bool = False, exclude_file: str | Path | None = None,
                    overwrite: bool = False, progress: bool = True, workers: int | None = None) -> dict:
    """Augment every parent of ``data`` into the folder ``out``; returns the run summary (also run.json).

    Nothing appears under ``out`` unless the whole run succeeds; inputs are only read. Parents stream
    through in chunks (memory does not grow with their number). ``workers`` > 1 spreads the XSF work over
    processes (default: ``default_workers``); the output is byte for byte the same for any number.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown output format {fmt!r}; choose xsf or extxyz")
    source = open_source(data)
    guard_output(out, data_inputs(data, source) + ([exclude_file] if exclude_file else []), "augment",
                 overwrite)
    names = _parent_names(source)
    stems = _derived_stems(names)
    excluded = _excluded_indices(names, read_exclude_list(exclude_file),
                                 source.generate_in.files if source.generate_in is not None else None,
                                 Path(exclude_file).parent, exclude_file) if exclude_file else set()
    out = Path(out)
    final_abs = out.resolve()
    start = time.perf_counter()
    counts = {"parents": len(names), "excluded": len(excluded), "augmented_parents": 0, "derived": 0}
    n_used = len(names) - len(excluded)
    rank = empty = 0  # parents seen that may be augmented; of those, ones due some that gave none
    close, unchecked, unchecked_names = [], [], []  # near-coincident atoms found; parents to check, names
    species: dict[str, None] = {}
    # one worker at most per chunk of parents (chunks carrying parents are a quarter the size); extxyz: none
    chunk = CHUNK // 4 if settings.strategy == "sequential" or source.xsf_paths is None else CHUNK
    workers = plan_workers(default_workers(len(names), fmt) if workers is None else workers,
                           -(-len(names) // chunk) if fmt == "xsf" else 1)
    with atomic_output_dir(out, overwrite=overwrite, command="augment") as tmp, \
            open(tmp / "manifest.csv", "w", newline="") as manifest_file:
        manifest_file.write(",".join(MANIFEST_FIELDS) + "\r\n")
        if fmt == "xsf":
            writer = _XsfWriter(tmp, final_abs, source.xsf_paths is not None, source.generate_in)
        else:
            writer = _ExtxyzWriter(tmp, only_derived)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _pool(workers) as pool, \
                    progress_bar(len(names), "augment", "parents", enabled=progress) as advance:
                if fmt == "xsf":
                    job = _Job(settings, writer.derived_dir, source.require_labels)
                    results = _xsf_results(source, names, stems, excluded, job, pool, workers)
                else:
                    results = writer.results(source, names, stems, excluded, settings)
                for index, parent, symbols, n_derived, files, rows in results:
                    species.update(dict.fromkeys(symbols))
                    if fmt == "xsf":
                        if not only_derived:
                            writer.parent(parent, names[index], stems[index])
                        writer.add_derived(files)
                    manifest_file.write(rows)
                    counts["augmented_parents"] += n_derived > 0
                    counts["derived"] += n_derived
                    if index not in excluded:
                        due = settings.strategy == "sequential" or copies_for(rank, settings.a) > 0
                        empty += due and not n_derived
                        rank += 1
                    if parent is not None and not parent.is_derived:
                        # parents read in this process (XSF files are read in _work_chunk), checked together
                        unchecked.append(parent)
                        unchecked_names.append(names[index])
                        if len(unchecked) == CHUNK:
                            close += [w for _, w in close_atoms(unchecked, unchecked_names)]
                            unchecked, unchecked_names = [], []
                    advance(1)
        close += [w for _, w in close_atoms(unchecked, unchecked_names)]
        for w in caught:
            if isinstance(w.message, CloseAtomsWarning):
                close.append(w.message)
            else:
                warnings.warn(w.message, stacklevel=2)
        warn_close_atoms(close)
        if not counts["derived"]:
            raise InputError(f"no derived structures: {why_nothing_made(source, settings, excluded)}", data)
        requested = copies_total(n_used, settings.a)
        shortfall = None
        if counts["derived"] < requested:
            shortfall = shortfall_message(settings, requested, counts["derived"], n_used, empty)
            warnings.warn(shortfall, stacklevel=2)
        writer.close(list(species))
        summary = {
            "pyita_version": __version__,
            "command": "augment",
            "data": str(data),
            "output_format": fmt,
            "only_derived": only_derived,
            "exclude_file": None if exclude_file is None else str(exclude_file),
            "settings": settings.as_dict(),
            "counts": counts,
            "derived_requested": requested,  # ⌊a·N⌋ over the parents not excluded
            "shortfall": requested - counts["derived"],
            "shortfall_reason": shortfall,
            "species": list(species),
            "seconds": round(time.perf_counter() - start, 3),
            "workers": workers,
            "python": sys.version.split()[0],
            "notes": "Derived structures carry first-order Taylor energies; their force columns (XSF) are "
                     "the parent's forces as placeholders, not labels.",
        }
        (tmp / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class _Job:
    """What a worker needs besides the parents: settings, where to write, whether labels are required."""

    def __init__(self, settings: AugmentSettings, derived_dir: str, require_labels: bool):
        self.settings, self.derived_dir, self.require_labels = settings, derived_dir, require_labels


def _manifest_row(file: str, parent_name: str, energy: float, info: dict) -> list:
    """One manifest row, in the order of MANIFEST_FIELDS."""
    vector = info.get("displacement", ("", "", ""))
    return [file, info["parent"], parent_name, info["copy"], info["atom"] + 1 if info["atom"] >= 0 else "all",
            info["direction"], vector[0], vector[1], vector[2], f"{info['taylor_shift']:.10f}",
            f"{energy:.10f}", info["strategy"], info["delta"], info["seed"]]


def _write_file(path: str, text: str) -> None:
    """Create one small file with three system calls (no buffered text-file object)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write_derived_xsf(parent, index: int, moves, settings: AugmentSettings, parent_name: str, stem: str,
                       derived_dir: str, template: XsfTemplate | None = None) -> tuple[list[str], str]:
    """Write one parent's derived XSF files; returns their paths relative to the output folder and the
    manifest rows as CSV text.

    The hot path of the job. The template holds the parent's cell and atom lines, formatted once (or the
    parent file's own lines, see ``XsfTemplate.verbatim``); a single-atom move re-formats only the moved
    atom's line.
    """
    if template is None:
        template = XsfTemplate(parent, forces=parent.forces)
    positions = parent.positions.tolist()
    forces = parent.forces.tolist()
    kind = parent.energy_kind
    plain = not any(c in parent_name + stem for c in ',"\r\n')  # nothing a CSV writer would quote
    buffer = io.StringIO()
    manifest = csv.writer(buffer)
    rows = []
    files = []
    for copy, move in enumerate(moves):
        energy, info, comments = describe(parent, index, move, settings, copy, forces)
        name = f"derived/{stem}-t{copy + 1:03d}.xsf"
        if move.atom is None:
            text = template.text(energy, comments, kind, positions=parent.positions + move.field)
            manifest.writerow(_manifest_row(name, parent_name, energy, info))
        else:
            atom = move.atom
            x, y, z = positions[atom]
            vx, vy, vz = move.vector
            text = template.text_one(energy, comments, kind, atom, (x + vx, y + vy, z + vz))
            if plain:  # the row csv.writer would write, without its per-field overhead
                rows.append(f"{name},{index},{parent_name},{copy},{atom + 1},{move.direction},{vx!r},{vy!r},"
                            f"{vz!r},{info['taylor_shift']:.10f},{energy:.10f},{settings.strategy},"
                            f"{settings.delta!r},{settings.seed}\r\n")
            else:
                manifest.writerow(_manifest_row(name, parent_name, energy, info))
        _write_file(f"{derived_dir}/{name[8:]}", text)
        files.append(name)
    return files, "".join(rows) + buffer.getvalue()


def _xsf_items(source: DataSource, names, stems, excluded, settings: AugmentSettings):
    """The work, one item per parent, in order: (index, name, stem, rank, path, parent, moves).

    XSF files are left for the worker to read (``rank`` None: read and check only, do not augment), except
    that the sequential strategy reads parents here while its budget lasts, to plan the moves. Other
    sources are read here and carry the parent and its moves.
    """
    n_parents = len(names) - len(excluded)
    if source.xsf_paths is None:
        for index, parent, moves in iter_moves(source, settings, n_parents, excluded):
            yield index, names[index], stems[index], None, None, parent, moves
        return
    plan = SequentialPlan(settings.a, n_parents, settings.delta, settings.max_force) \
        if settings.strategy == "sequential" else None
    rank = 0
    for index, path in enumerate(names):
        item = (index, path, stems[index])
        if index in excluded:
            yield *item, None, path, None, None
            continue
        if plan is None:
            yield *item, rank, path, None, None
        elif plan.remaining > 0:
            parent = read_xsf(path, require_labels=source.require_labels)
            moves = [] if parent.is_derived else plan.moves(parent)
            yield *item, None, path, parent, moves
        else:
            yield *item, None, path, None, None
        rank += 1


def _work_chunk(items: list, job: _Job):
    """Read (if needed), displace and write the parents of one chunk, in a worker or in this process.

    Returns (index, parent or None, symbols, number derived, files, manifest text) per item and the
    chunk's warnings (a worker's own would be lost); errors are raised (they pickle, so a worker's reach
    the main process intact). The parents read here are checked for near-coincident atoms all at once (one at a time
    would cost several times more).
    """
    out, parents, parent_names = [], [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for item in items:
            out.append(_work_item(item, job, parents, parent_names))
        for _, found in close_atoms(parents, parent_names):
            warnings.warn(found)
    return out, [w.message for w in caught]


def _work_item(item, job: _Job, parents: list, parent_names: list):
    """One parent of ``_work_chunk``; a parent read from its XSF file is added to ``parents``."""
    index, name, stem, rank, path, parent, moves = item
    template = None
    if path is not None and (parent is None or moves):
        # read here (in the worker), keeping the file's lines for a verbatim template
        # (with require_labels the reader has checked what check_labels would: energy, forces, finite)
        parent_read, lines, layout = read_xsf_layout(path, require_labels=job.require_labels)
        if not parent_read.is_derived:
            parents.append(parent_read)
            parent_names.append(name)
        if parent is None:
            parent = parent_read
            if rank is not None and not parent.is_derived:
                moves = moves_for(parent, index, rank, job.settings)
        if moves and moves[0].atom is not None:
            template = XsfTemplate.verbatim(parent, lines, layout)
    if moves:
        files, rows = _write_derived_xsf(parent, index, moves, job.settings, name, stem, job.derived_dir,
                                         template)
    else:
        files, rows = [], ""
    return (index, None if path is not None else parent, list(dict.fromkeys(parent.symbols)), len(moves or ()),
            files, rows)


def _noop() -> None:
    return None


@contextmanager
def _pool(workers: int):
    """Worker processes (forked now, before any progress-bar thread exists), or None for one process."""
    if workers <= 1:
        yield None
        return
    with worker_pool(workers, "fork") as pool:
        pool.submit(_noop).result()
        yield pool


def _chunk_results(result) -> list:
    """A chunk's per-parent results, after issuing its warnings in this process."""
    out, messages = result
    for message in messages:
        warnings.warn(message)
    return out


def _xsf_results(source: DataSource, names, stems, excluded, job: _Job, pool, workers: int):
    """Per-parent results in parent order, computed here (no pool) or by worker processes, a bounded
    number of chunks ahead so memory stays flat."""
    pending: deque = deque()

    def submit(chunk):
        if pool is None:
            pending.append(_chunk_results(_work_chunk(chunk, job)))
        else:
            pending.append(pool.submit(_work_chunk, chunk, job))

    def collect():
        result = pending.popleft()
        return result if isinstance(result, list) else _chunk_results(result.result())

    chunk: list = []
    for item in _xsf_items(source, names, stems, excluded, job.settings):
        # parents carried from here (planned moves) must not pile up: send them in smaller chunks
        chunk.append(item)
        if len(chunk) >= CHUNK or (item[5] is not None and len(chunk) >= CHUNK // 4):
            submit(chunk)
            chunk = []
        while pending and (len(pending) > AHEAD * workers or isinstance(pending[0], list)
                           or pending[0].done()):
            yield from collect()
    if chunk:
        submit(chunk)
    while pending:
        yield from collect()


class _XsfWriter:
    """Derived structures as aenet XSF files under derived/, plus an augmented generate.in.

    The FILES list is streamed to a scratch file, so memory does not grow with the number of parents.
    """

    def __init__(self, tmp: Path, final_abs: Path, parents_on_disk: bool, template: GenerateIn | None):
        self.tmp, self.final_abs = tmp, str(final_abs)
        self.template = template
        self.missing_setups: list[str] = []
        self.setups = self._copy_setups(template)   # first: a missing setup file stops the run before work
        (tmp / "derived").mkdir()
        self.derived_dir = str(tmp / "derived")
        self._list = open(tmp / ".files.tmp", "w+")
        self.count = 0
        self.parents_on_disk = parents_on_disk
        self._folders: dict[str, str] = {}

    def parent(self, parent, name: str, stem: str) -> None:
        """List a parent: its own file when it is an XSF on disk that aenet reads as it is, else a copy
        written under parents/ (aenet stops on a tab between fields, see ``aenet_text``).

        Paths are relative to the output folder (symbolic links in the parent's folder resolved), so the
        output generate.in works from its own folder, as aenet reads it.
        """
        if self.parents_on_disk and aenet_text(name) is None:
            folder, base = os.path.split(name)
            rel = self._folders.get(folder)
            if rel is None:
                rel = self._folders[folder] = os.path.relpath(os.path.realpath(folder or "."), self.final_abs)
            entry = f"{rel}/{base}" if rel != "." else base
        else:
            parent = read_xsf(name) if parent is None else parent
            (self.tmp / "parents").mkdir(exist_ok=True)
            entry = f"parents/{stem}.xsf"
            # the derived files name this parent by its original source (e.g. "sample[3]"): record it
            copy = parent.copy(comments=[f"{ORIGINAL_MARK} {name}"] + parent.comments)
            _write_file(str(self.tmp / entry), format_xsf(copy))
        self._list.write(entry + "\n")
        self.count += 1

    def add_derived(self, files: list[str]) -> None:
        if files:
            self._list.write("\n".join(files) + "\n")
            self.count += len(files)

    def _copy_setups(self, template: GenerateIn | None) -> dict[str, str]:
        """Copy each SETUPS file beside the output generate.in and name it by its plain file name.

        A copy, not a rebased path: aenet reads a SETUPS name list-directed, so a ``/`` would end it, and the
        output folder then runs as it stands (``cd OUT && generate.x generate.in``) wherever it is moved.
        """
        setups, taken = {}, {}
        for species, name in (template.setups if template is not None else {}).items():
            source = Path(name) if os.path.isabs(name) else Path(template.folder) / name
            if not source.is_file():   # generate.x needs it, the augmentation does not: warned at the end
                self.missing_setups.append(f"{template.path}: SETUPS file {name!r} for {species} does not "
                                           f"exist (looked for {source}); the output generate.in names it as "
                                           "written, so put it beside the output before running generate.x")
                setups[species] = name
                continue
            copy = source.name if taken.get(source.name, source) == source else f"{species}.stp"
            taken[copy] = source
            shutil.copyfile(source, self.tmp / copy)
            setups[species] = copy
        return setups

    def close(self, species: list[str]) -> None:
        template = self.template
        if template is not None:
            missing = [s for s in species if s not in template.types]
            if missing:  # generate.x would stop on these structures
                raise InputError(f"species {', '.join(missing)} occur in the structures but not in TYPES",
                                 template.path)
            for message in self.missing_setups:
                warnings.warn(message, stacklevel=3)
            gen = GenerateIn(output=template.output, types=dict(template.types),
                             setups=self.setups, options=list(template.options))
        else:
            gen = GenerateIn(output="augmented.train", types={s: 0.0 for s in species},
                             setups={s: f"{s}.stp" for s in species},
                             options=["! TYPES energies are placeholders (0.0 eV): set the atomic reference "
                                      "energies of your method"])
        head = format_generate_in(gen)
        assert head.endswith("FILES\n0\n")
        self._list.seek(0)
        with open(self.tmp / "generate.in", "w") as handle:
            handle.write(head[:-2] + f"{self.count}\n")
            while block := self._list.read(1 << 20):
                handle.write(block)
        self._list.close()
        os.remove(self.tmp / ".files.tmp")


class _ExtxyzWriter:
    """All structures in one extended-XYZ file; derived frames carry an energy and no forces."""

    def __init__(self, tmp: Path, only_derived: bool):
        self.handle = open(tmp / "augmented.extxyz", "w")
        self.only_derived = only_derived

    def _write(self, structure, extra: dict) -> None:
        import ase.io

        atoms = structure.to_ase()
        atoms.info = {k: v for k, v in {**atoms.info, **extra}.items() if v is not None}
        ase.io.write(self.handle, atoms, format="extxyz")

    def results(self, source: DataSource, names, stems, excluded, settings: AugmentSettings):
        """Write parent and derived frames, parent by parent; yields the same records as ``_xsf_results``."""
        for index, parent, moves in iter_moves(source, settings, len(names) - len(excluded), excluded):
            if not self.only_derived:
                self._write(parent, {"source": names[index], "derived": False})
            buffer = io.StringIO()
            manifest = csv.writer(buffer)
            forces = parent.forces.tolist() if moves else None
            for copy, move in enumerate(moves):
                energy, info, comments = describe(parent, index, move, settings, copy, forces)
                name = f"{stems[index]}-t{copy + 1:03d}"
                self._write(displaced(parent, move, info, comments, energy), {"name": name, "derived": True})
                manifest.writerow(_manifest_row(f"augmented.extxyz#{name}", names[index], energy, info))
            yield index, parent, parent.symbols, len(moves), [], buffer.getvalue()

    def close(self, species) -> None:
        self.handle.close()
