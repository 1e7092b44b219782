"""Resumable labelling of structures with a reference calculator (``pyita label``, and the engine of
``pyita check``).

Every finished structure is appended at once to a checkpoint (JSON lines: index, energy, forces at full
precision), so a crash, a failing structure or Ctrl-C loses nothing: rerunning the same command reads the
checkpoint, skips what is done and computes the rest. The final output is written atomically and the
checkpoint removed only after success. With ``workers > 1`` structures are computed in separate processes
(one calculator each, one thread each); results do not depend on the worker count.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita import __version__
from pyita.check.calculators import (CalculationError, CalculatorSpec, compute, fold_for, limit_threads,
                                     resolve_calculator, threads_limited)
from pyita.errors import PyitaError
from pyita.io import open_source
from pyita.io.records import json_text
from pyita.parallel import check_workers, plan_workers, worker_pool
from pyita.progress import progress_bar
from pyita.structure import Structure

__all__ = ["Checkpoint", "label_structures", "run_label", "fingerprint", "structure_name"]

CHECKPOINT_VERSION = 1


def structure_name(structure: Structure, index: int, noun: str = "structure") -> str:
    where = structure.source or structure.info.get("name")
    return f"{noun} {index + 1}" + (f" ({where})" if where else "")


def fingerprint(structures: Sequence[Structure]) -> str:
    """Identity of a list of structures (species, positions, cells) for checkpoint matching."""
    h = hashlib.sha256()
    for s in structures:
        h.update(" ".join(s.symbols).encode())
        h.update(np.ascontiguousarray(s.positions, dtype=np.float64).tobytes())
        h.update(b"-" if s.cell is None else np.ascontiguousarray(s.cell, dtype=np.float64).tobytes())
    return h.hexdigest()[:24]


def is_checkpoint_file(path: Path) -> bool:
    """A regular file whose first line is the header a ``Checkpoint`` writes (or an empty file: a run killed
    before its header was flushed)."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            first = handle.readline(1 << 20)
        return not first or (first.endswith(b"\n") and isinstance(header := json.loads(first), dict)
                             and "pyita_checkpoint" in header)
    except (OSError, ValueError):
        return False


#: The record that marks a folder of checkpoints (``pyita check``'s ``OUT.partial/``) as PyITA's own.
FOLDER_RECORD = "pyita-checkpoint.json"


class CheckpointFolder:
    """A folder of ``Checkpoint`` files recognised by its record: someone else's folder of that name is
    refused, never used or removed; only the files it holds of its own are ever deleted."""

    def __init__(self, path: str | Path, command: str):
        self.path, self.command = Path(path), command
        if not (self.path.exists() or self.path.is_symlink()):
            return
        try:
            record = json.loads((self.path / FOLDER_RECORD).read_text())
        except (OSError, ValueError):
            record = None
        if self.path.is_symlink() or not isinstance(record, dict) or record.get("pyita_checkpoints") != command:
            raise PyitaError(f"{self.path} exists and is not a checkpoint folder of `pyita {command}` (it holds no "
                             f"{FOLDER_RECORD} naming it); it was left untouched: move it away or choose another "
                             "--out")

    def create(self) -> None:
        """Make the folder with its record (when the first result is saved, so a run that fails before
        leaves none)."""
        if not self.path.exists():
            self.path.mkdir(parents=True)
            (self.path / FOLDER_RECORD).write_text(json_text({"pyita_checkpoints": self.command}))

    def remove(self) -> None:
        """Delete the record and the checkpoint files; a file of someone else's inside keeps the folder."""
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.suffix == ".jsonl" and is_checkpoint_file(entry):
                entry.unlink()
        (self.path / FOLDER_RECORD).unlink(missing_ok=True)
        try:
            self.path.rmdir()
        except OSError:
            warnings.warn(f"{self.path} was kept: it holds files PyITA did not write", stacklevel=2)


class Checkpoint:
    """Append-only JSON-lines file: a header line (what run it belongs to), then one line per result."""

    def __init__(self, path: str | Path, meta: dict, restart: bool = False, folder: CheckpointFolder | None = None):
        self.path, self.folder = Path(path), folder
        self.meta = json.loads(json_text(meta))  # normalise (tuples → lists) as written, for comparison
        self.results: dict[int, tuple[float, list | None]] = {}
        self._handle = None
        if (self.path.exists() or self.path.is_symlink()) and not is_checkpoint_file(self.path):
            raise PyitaError(f"{self.path} exists and is not a PyITA checkpoint; it was left untouched: move it "
                             "away or choose another --out")
        if restart:
            self.path.unlink(missing_ok=True)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        offset, keep, header_seen = 0, 0, False
        for number, raw in enumerate(lines):
            last = number == len(lines) - 1
            line_end = offset + len(raw) + (0 if last else 1)
            if raw.strip():
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    if last:  # the line being written when the run died: drop it
                        break
                    raise PyitaError(f"checkpoint {self.path} is damaged at line {number + 1}; delete it (or "
                                     "use --restart) to start again") from None
                if last:  # complete but without its newline: drop it too (recomputed), keeps appends clean
                    break
                if not header_seen:
                    if not isinstance(record, dict) or "pyita_checkpoint" not in record:
                        raise PyitaError(f"{self.path} is not a PyITA checkpoint; move it away or use --restart")
                    self._check_header(record)
                    header_seen = True
                else:
                    self.results[int(record["i"])] = (float(record["e"]), record.get("f"))
            offset = line_end
            keep = offset
        if not header_seen:
            self.path.unlink()
            return
        if keep < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)

    def _check_header(self, record: dict) -> None:
        old = record.get("meta", {})
        for key, value in self.meta.items():
            if key == "pyita_version":
                continue
            if old.get(key) != value:
                raise PyitaError(
                    f"checkpoint {self.path} belongs to a different run ({key}: {old.get(key)!r} there, "
                    f"{value!r} now); rerun with the same input and settings, or use --restart to discard it")

    def __contains__(self, index: int) -> bool:
        return index in self.results

    def append(self, index: int, energy: float, forces: np.ndarray | None) -> None:
        if self._handle is None:
            new = not self.path.exists()
            if self.folder is not None:
                self.folder.create()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a")
            if new:
                self._handle.write(json_text({"pyita_checkpoint": CHECKPOINT_VERSION, "meta": self.meta}))
        f = None if forces is None else np.asarray(forces).tolist()
        self._handle.write(json_text({"i": int(index), "e": float(energy), "f": f}))
        self._handle.flush()
        self.results[int(index)] = (float(energy), f)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


# --- workers ---------------------------------------------------------------------------------------------

_WORKER_CALC = None


def _init_worker(spec: CalculatorSpec, threads: int) -> None:
    global _WORKER_CALC
    limit_threads(threads)
    _WORKER_CALC = spec.make()


def _work(index: int, structure: Structure, need_forces: bool, fold):
    """Runs in a worker: (index, energy, forces) or (index, None, error text) — no exception pickling."""
    try:
        energy, forces = compute(_WORKER_CALC, structure, need_forces, fold)
        return index, energy, forces
    except Exception as exc:  # noqa: BLE001 - reported to the main process with the structure's name
        return index, None, f"{type(exc).__name__}: {exc}"


def _failure(spec: CalculatorSpec, structures, index: int, error: str, checkpoint: Checkpoint | None,
             total: int, noun: str) -> CalculationError:
    kept = len(checkpoint.results) if checkpoint is not None else 0
    if checkpoint is None:
        where = ""
    elif kept:
        where = f"; {kept} of {total} finished results are kept in {checkpoint.path} — fix the cause and " \
                "rerun the same command to continue"
    else:
        where = "; no calculation had finished, so nothing was kept"
    return CalculationError(f"calculator {spec.name!r} failed on {structure_name(structures[index], index, noun)}: "
                            f"{error}{where}")


def label_structures(structures: Sequence[Structure], calculator, *, checkpoint: Checkpoint | None = None,
                     workers: int = 1, need_forces: bool = True, progress: bool = True,
                     description: str = "label", calc_kwargs=None, noun: str = "structure",
                     threads: int | None = None, fold="auto") -> list[tuple[float, np.ndarray | None]]:
    """Energy and forces of every structure, in order. Results already in ``checkpoint`` are reused, new
    ones appended as they finish. On a failing structure: CalculationError naming it; the checkpoint keeps
    everything finished (in parallel runs, also the structures already in flight).

    ``threads``: OpenMP threads per process (default: unchanged for one worker, 1 each for several).
    ``fold``: ``auto`` (each structure's ``info["fold"]``, if any), ``none`` or e.g. (2, 2, 1): evaluate the
    replicated cell, see ``pyita.check.calculators.compute``."""
    spec = resolve_calculator(calculator, calc_kwargs, fold)
    if check_workers(workers) > 1 and not spec.parallel_safe:
        raise PyitaError("a calculator object cannot be shared between processes; pass its class or a "
                         "factory (or an import path) to use workers > 1")
    todo = [k for k in range(len(structures)) if checkpoint is None or k not in checkpoint]
    workers = plan_workers(workers, len(todo))
    results: dict[int, tuple[float, np.ndarray | None]] = {}
    if todo:
        desc = description if len(todo) == len(structures) else \
            f"{description} (resumed, {len(structures) - len(todo)} done)"
        with progress_bar(len(todo), desc, "structures", enabled=progress) as advance:
            if workers == 1:
                with threads_limited(threads):
                    _serial(spec, structures, todo, checkpoint, results, need_forces, advance, noun)
            else:
                _parallel(spec, structures, todo, checkpoint, results, need_forces, advance, workers, noun,
                          threads or 1)
    if checkpoint is not None:
        checkpoint.close()
        for k, (energy, forces) in checkpoint.results.items():
            results.setdefault(k, (energy, None if forces is None else np.array(forces, dtype=np.float64)))
    return [results[k] for k in range(len(structures))]


def _serial(spec, structures, todo, checkpoint, results, need_forces, advance, noun) -> None:
    calc = spec.make()
    for index in todo:
        try:
            fold = fold_for(structures[index], spec.fold)
            energy, forces = compute(calc, structures[index], need_forces, fold)
        except Exception as exc:  # noqa: BLE001
            raise _failure(spec, structures, index, f"{type(exc).__name__}: {exc}", checkpoint,
                           len(structures), noun) from exc
        if checkpoint is not None:
            checkpoint.append(index, energy, forces)
        results[index] = (energy, forces)
        advance(1)


def _parallel(spec, structures, todo, checkpoint, results, need_forces, advance, workers, noun,
              threads) -> None:
    spec.make()  # set-up errors surface here, once, not in every worker
    pending = list(reversed(todo))
    first_error = None
    # spawn: no inherited OpenMP/BLAS state
    with worker_pool(workers, "spawn", initializer=_init_worker, initargs=(spec, threads)) as pool:
        running = set()
        while pending or running:
            while pending and first_error is None and len(running) < 2 * workers:
                index = pending.pop()
                running.add(pool.submit(_work, index, structures[index], need_forces,
                                        fold_for(structures[index], spec.fold)))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, energy, payload = future.result()
                if energy is None:
                    if first_error is None:
                        first_error = (index, payload)
                    continue
                if checkpoint is not None:
                    checkpoint.append(index, energy, payload)
                results[index] = (energy, payload)
                advance(1)
    if first_error is not None:
        raise _failure(spec, structures, first_error[0], first_error[1], checkpoint, len(structures), noun)


# --- the `pyita label` command ----------------------------------------------------------------------------

def run_label(data, calculator, out: str | Path, *, calc_kwargs=None, workers: int = 1, progress: bool = True,
              restart: bool = False, overwrite: bool = False, threads: int | None = None, fold="auto") -> dict:
    """Label every structure of ``data`` with ``calculator`` into the extxyz file ``out`` (atomically).

    Results go to ``out + '.partial'`` as they finish; a rerun of the same command continues from there.
    Each frame keeps the input's metadata; ``input_energy`` holds the energy the input had (e.g. a Taylor
    estimate), ``label_calculator`` names the calculator.
    """
    from pyita.io.atomic import existing_ancestor
    from pyita.io.locks import exclusive
    from pyita.io.outputs import guard_output, input_files_of, refuse_overlap

    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    inputs = input_files_of(data)
    guard_output(out, inputs, "label", overwrite, folder=False, is_previous=_is_label_output)
    refuse_overlap(partial, inputs, option="--out (its checkpoint file)")
    with exclusive(existing_ancestor(out.parent) / f".{partial.name}.lock", f"checkpoint {partial}"):
        return _label(data, calculator, out, partial, calc_kwargs, workers, progress, restart, threads, fold)


def _is_label_output(path: Path) -> bool:
    """An extended-XYZ file `pyita label` wrote: its first frame names the labelling calculator."""
    try:
        with open(path, errors="replace") as handle:
            handle.readline()
            return "label_calculator=" in handle.readline()
    except OSError:
        return False


def _label(data, calculator, out: Path, partial: Path, calc_kwargs, workers, progress, restart, threads,
           fold) -> dict:
    import ase.io

    from pyita.io.atomic import atomic_write_text

    spec = resolve_calculator(calculator, calc_kwargs, fold)
    structures = list(open_source(data, require_labels=False)) if not isinstance(data, (list, tuple)) \
        else list(data)
    if not structures:
        raise PyitaError(f"{data}: no structures to label")
    start = time.perf_counter()
    meta = {"kind": "label", "data": str(data) if isinstance(data, (str, Path)) else "<structures>",
            "count": len(structures), "fingerprint": fingerprint(structures), "calculator": spec.describe(),
            "pyita_version": __version__}
    checkpoint = Checkpoint(partial, meta, restart=restart)
    resumed = len(checkpoint.results)
    labels = label_structures(structures, spec, checkpoint=checkpoint, workers=workers, progress=progress,
                              threads=threads)
    import io

    buffer = io.StringIO()
    for structure, (energy, forces) in zip(structures, labels):
        info = dict(structure.info)
        if structure.energy is not None:
            info["input_energy"] = structure.energy
        info["label_calculator"] = spec.name
        labelled = structure.copy(energy=energy, forces=forces, energy_kind="total", info=info)
        atoms = labelled.to_ase()
        atoms.info = {key: v for key, v in atoms.info.items() if _extxyz_ok(v)}
        ase.io.write(buffer, atoms, format="extxyz")
    atomic_write_text(out, buffer.getvalue())
    checkpoint.remove()
    return {"pyita_version": __version__, "command": "label", "data": meta["data"], "out": str(out),
            "structures": len(structures), "resumed": resumed, "computed": len(structures) - resumed,
            "calculator": spec.describe(), "workers": workers,
            "seconds": round(time.perf_counter() - start, 3)}


def _extxyz_ok(value) -> bool:
    if value is None:
        return False
    if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
        return True
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001
        return False
    return arr.dtype.kind in "biuf" and arr.ndim <= 2
