"""``pyita md``: molecular dynamics with a trained potential from many starting structures at once, watching
every run for failure (``pyita.md.failure``) and, with a reference calculator, measuring the model's errors
along its own trajectories.

Work goes to ``OUT.partial/`` (streamed trajectories and logs, a checkpoint every ``checkpoint_every`` steps,
the reference labels as they finish): the same command with ``--resume`` after a crash or a kill continues from
there and writes what an uninterrupted run would have. The results appear in ``OUT/`` only when complete.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita import __version__
from pyita.check.calculators import resolve_calculator
from pyita.check.label import CheckpointFolder, fingerprint
from pyita.errors import Interrupted, PyitaError, SettingError, whole_number
from pyita.md.engine import LOGS, STATE_FILE, TRAJECTORIES, Engine
from pyita.md.evaluate import pair_names, shortest_distances
from pyita.md.failure import distance_thresholds
from pyita.md.integrate import initial_momenta, masses_of
from pyita.md.reference import relabel
from pyita.md.report import run_record, totals, write_md
from pyita.md.settings import CHECKPOINT_EVERY, MDSettings
from pyita.md.state import Run
from pyita.model import Potential, load_potential, resolve_device
from pyita.structure import Structure


def start_indices(count: int, starts: int | None) -> list[int]:
    """``starts`` places evenly spread over ``count`` structures (all of them when None or more)."""
    if starts is None or starts >= count:
        return list(range(count))
    return sorted({int(round(k)) for k in np.linspace(0, count - 1, starts)})


def make_runs(structures: Sequence[Structure], chosen: list[int], settings: MDSettings, label: str) -> list[Run]:
    """A run for every chosen start × replica, with its velocities drawn from the generator seeded by
    (seed, start, replica): the same starts and seed give the same velocities, whatever the model."""
    runs = []
    width = max(3, len(str(max(chosen))))
    for start in chosen:
        s = structures[start]
        for replica in range(settings.replicas):
            seed = [settings.seed, start, replica]
            rng = np.random.default_rng(seed)
            momenta = initial_momenta(s.symbols, s.positions, s.cell, settings.temperature, rng)
            fold = s.info.get("fold")
            runs.append(Run(name=f"s{start:0{width}d}-r{replica:02d}", start=start, replica=replica,
                            source=s.source or f"{label}[{start}]", seed=seed, symbols=list(s.symbols),
                            cell=None if s.cell is None else s.cell.copy(), fold=None if fold is None else str(fold),
                            masses=masses_of(s.symbols), rng=rng, positions=s.positions.copy(), momenta=momenta))
    return runs


def model_fingerprint(potential: Potential) -> str:
    """Identity of a model's weights, normalisation and descriptor (for matching a checkpoint)."""
    h = hashlib.sha256(repr((potential.species, potential.descriptor.settings(), potential.hidden)).encode())
    for name, tensor in sorted(potential.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def read_starts(data) -> tuple[list[Structure], list[Path], str]:
    """The structures of every data argument (or structures given as such), the files read, and a label."""
    from pyita.io import open_source
    from pyita.io.outputs import data_inputs

    if isinstance(data, (str, Path)):
        data = [data]
    data = list(data)
    if data and all(isinstance(s, Structure) for s in data):
        return data, [], "<structures>"
    sources = [open_source(spec, require_labels=False) for spec in data]
    structures = [s for source in sources for s in source]
    inputs = [p for spec, source in zip(data, sources) for p in data_inputs(spec, source)]
    if not structures:
        raise PyitaError(f"{', '.join(map(str, data))}: no structures to start from")
    return structures, inputs, " ".join(map(str, data))


def _recorded(path, out: Path) -> str:
    """A data argument or model as summary.json records it: a file or folder relative to the output folder,
    anything else (``sample:tio2-md``) as given."""
    if isinstance(path, (str, Path)) and Path(path).exists():
        return os.path.relpath(Path(path).resolve(), out.resolve())
    return str(path)


def _clear(partial: Path) -> None:
    """Remove what a run left in its working folder: only the files it writes there."""
    for kind, suffix in ((TRAJECTORIES, ".extxyz"), (LOGS, ".jsonl")):
        if (partial / kind).is_dir():
            for path in (partial / kind).glob(f"*{suffix}"):
                path.unlink()
            try:
                (partial / kind).rmdir()
            except OSError:
                pass   # someone else's file inside: CheckpointFolder.remove says so
    (partial / STATE_FILE).unlink(missing_ok=True)
    CheckpointFolder(partial, "md").remove()


@dataclass
class Dynamics:
    """What the runs did: the runs themselves (their failures and sums), the distance thresholds and the
    shortest distances they came from, the step resumed from, and with a reference the errors per run and the
    rows of reference.csv."""

    runs: list[Run]
    thresholds: np.ndarray
    shortest: np.ndarray
    resumed: int
    errors: dict[str, dict]
    reference_rows: list[dict] | None


def dynamics(potential: Potential, structures: Sequence[Structure], settings: MDSettings, partial: Path,
             folder: CheckpointFolder, *, runs: list[Run], spec=None, meta: dict | None = None,
             thresholds_from: Sequence[Structure] | None = None, checkpoint_every: int = CHECKPOINT_EVERY,
             progress: bool = True) -> Dynamics:
    """The one way runs are integrated (``pyita md`` and an experiment's tasks alike): the failure thresholds
    from the shortest distances of ``thresholds_from`` (default: ``structures``), the engine working in
    ``partial`` (resumed from its checkpoint if there is one), then the reference's labels of the frames."""
    shortest = shortest_distances(list(thresholds_from or structures), potential.species,
                                  potential.descriptor.cutoff)
    thresholds = distance_thresholds(shortest, settings.min_distance_fraction)
    meta = {"kind": "md", "settings": settings.as_dict(), "model": model_fingerprint(potential),
            "runs": [run.name for run in runs], "reference": None if spec is None else spec.describe(),
            **(meta or {})}
    resumed = Engine(potential, runs, settings, thresholds, partial, meta).simulate(checkpoint_every, progress)
    errors, reference_rows = {}, None
    if spec is not None:
        reference_rows, errors = relabel({run.name: partial / TRAJECTORIES / f"{run.name}.extxyz" for run in runs},
                                         settings.reference_every, spec, folder, progress)
    return Dynamics(runs, thresholds, shortest, resumed, errors, reference_rows)


def simulate(potential: Potential, structures: Sequence[Structure], settings: MDSettings, *, reference=None,
             thresholds_from: Sequence[Structure] | None = None, label: str = "<structures>") -> Dynamics:
    """Dynamics from every structure given (``settings.starts`` is not applied), in this process, with the
    engine's streams in a temporary folder that is gone on return: what an experiment's task needs, which
    keeps numbers only. ``reference``: a calculator spec as ``pyita check`` takes."""
    import tempfile

    spec = None if reference is None else resolve_calculator(reference)
    potential.eval()
    potential.check_species(structures)
    runs = make_runs(structures, list(range(len(structures))), settings, label)
    with tempfile.TemporaryDirectory(prefix="pyita-md-") as tmp:
        folder = CheckpointFolder(Path(tmp) / "work", "md")
        folder.create()
        return dynamics(potential, structures, settings, folder.path, folder, runs=runs, spec=spec,
                        thresholds_from=thresholds_from, checkpoint_every=settings.steps + 1, progress=False)


def run_md(model, data, out: str | Path, settings: MDSettings | None = None, *, reference=None,
           calc_kwargs=None, fold="auto", device=None, checkpoint_every: int = CHECKPOINT_EVERY,
           overwrite: bool = False, resume: bool = False, progress: bool = True) -> dict:
    """``pyita md``: dynamics of ``model`` (a model file, a folder of aenet .nn files or a Potential) from the
    structures of ``data`` (data arguments, or Structures) into ``out``; returns the summary (summary.json).
    ``reference``: a calculator spec as ``pyita check`` takes (relabels every ``settings.reference_every``-th
    trajectory frame)."""
    from pyita.io.atomic import atomic_output_dir, existing_ancestor
    from pyita.io.locks import exclusive
    from pyita.io.outputs import guard_output, refuse_overlap

    settings = settings or MDSettings()
    if not isinstance(settings, MDSettings):
        raise SettingError(f"settings must be an MDSettings, got {type(settings).__name__}")
    whole_number(checkpoint_every, "--checkpoint-every", 1)
    device = resolve_device(device)
    spec = None if reference is None else resolve_calculator(reference, calc_kwargs, fold)
    start_time = time.perf_counter()
    structures, inputs, label = read_starts(data)
    if not isinstance(model, Potential):
        inputs = [Path(model), *inputs]
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    guard_output(out, inputs, "md", overwrite)
    refuse_overlap(partial, inputs, option="--out (its checkpoint folder)")
    potential = load_potential(model, device)
    potential.eval()
    potential.check_species(structures)
    with exclusive(existing_ancestor(out.parent) / f".{partial.name}.lock", f"checkpoint {partial}"):
        folder = CheckpointFolder(partial, "md")   # someone else's folder of that name: refused before any work
        if resume and not partial.is_dir():
            raise PyitaError(f"--resume: no checkpoint folder {partial} to continue from")
        if partial.exists() and not resume:
            if not overwrite:
                raise PyitaError(f"{partial} exists: the checkpoint of an interrupted run? --resume continues it, "
                                 "--overwrite starts again (or choose another --out)")
            _clear(partial)
        folder.create()
        try:
            done = dynamics(potential, structures, settings, partial, folder, spec=spec,
                            meta={"structures": fingerprint(structures), "pyita_version": __version__},
                            runs=make_runs(structures, start_indices(len(structures), settings.starts), settings,
                                           label), checkpoint_every=checkpoint_every, progress=progress)
        except (Interrupted, KeyboardInterrupt) as exc:
            exc.add_note(f"the work so far is kept in {partial}: the same command with --resume continues it")
            raise
        runs, thresholds, shortest = done.runs, done.thresholds, done.shortest
        resumed, errors, reference_rows = done.resumed, done.errors, done.reference_rows
        pairs = pair_names(potential.species)
        summary = {
            "pyita_version": __version__, "command": "md",
            "model": "<potential>" if isinstance(model, Potential) else _recorded(model, out),
            "data": [label] if label == "<structures>" else
            [_recorded(d, out) for d in ([data] if isinstance(data, (str, Path)) else data)],
            "settings": settings.as_dict(), "seed": settings.seed, "species": list(potential.species),
            "reference": None if spec is None else spec.describe(),
            "shortest_distance_A": {p: float(d) if np.isfinite(d) else None for p, d in zip(pairs, shortest)},
            "min_distance_threshold_A": dict(zip(pairs, map(float, thresholds))),
            "totals": totals(runs, settings),
            "runs": [run_record(run, settings, errors.get(run.name) if spec is not None else None) for run in runs],
            "resumed_from_step": resumed, "device": str(device),
            "seconds": round(time.perf_counter() - start_time, 3),
        }
        with atomic_output_dir(out, overwrite=overwrite, command="md") as tmp:
            write_md(tmp, partial, runs, summary, potential.species, reference_rows)
        _clear(partial)
    return summary

