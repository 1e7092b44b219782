"""How `pyita augment` spreads XSF work over processes: parents in chunks to forked workers, a bounded number
of chunks ahead, results back in parent order (so the output is the same for any number of workers)."""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections import deque
from contextlib import contextmanager

from pyita.augment.settings import AugmentSettings
from pyita.augment.derive import iter_moves, moves_for
from pyita.augment.strategies import SequentialPlan
from pyita.augment.writers import write_derived_xsf
from pyita.errors import PyitaError
from pyita.geometry import close_atoms
from pyita.io import DataSource
from pyita.io.xsf import read_xsf, read_xsf_layout
from pyita.io.xsf_write import XsfTemplate
from pyita.parallel import plan_workers, usable_cores, worker_pool
from pyita.reference import Composition


#: Parents per task sent to a worker process, and tasks in flight per worker (bounds memory).
CHUNK = 64


AHEAD = 3


#: Below this many parents a single process is faster than starting workers.
PARALLEL_MIN_PARENTS = 256


def workers_for(requested: int | None, n_parents: int, fmt: str, carries_parents: bool) -> int:
    """The worker processes a run starts: ``requested`` (else ``default_workers``), at most one per chunk of
    parents (a quarter chunk when the chunks carry parents read here: sequential plans, non-XSF sources) and
    per core; extxyz output: one."""
    chunk = CHUNK // 4 if carries_parents else CHUNK
    return plan_workers(default_workers(n_parents, fmt) if requested is None else requested,
                        -(-n_parents // chunk) if fmt == "xsf" else 1)


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


class Job:
    """What a worker needs besides the parents: settings, where to write, whether labels are required."""

    def __init__(self, settings: AugmentSettings, derived_dir: str, require_labels: bool):
        self.settings, self.derived_dir, self.require_labels = settings, derived_dir, require_labels


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


def _work_chunk(items: list, job: Job):
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
            warnings.warn(found, stacklevel=2)
    return out, [w.message for w in caught]


def _work_item(item, job: Job, parents: list, parent_names: list):
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
        files, rows = write_derived_xsf(parent, index, moves, job.settings, name, stem, job.derived_dir,
                                         template)
    else:
        files, rows = [], ""
    return index, None if path is not None else parent, Composition.of(parent), len(moves or ()), files, rows


def _noop() -> None:
    return None


@contextmanager
def worker_processes(workers: int):
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
        warnings.warn(message, stacklevel=2)
    return out


def xsf_results(source: DataSource, names, stems, excluded, job: Job, pool, workers: int):
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
