"""The experiment runner's ``backend = "aenet"``: train and evaluate one condition with the real aenet."""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita.backends.condition import ConditionResult
from pyita.backends.aenet.folder import Entry, assign_names, write_run_folder
from pyita.backends.aenet.executables import find_executables
from pyita.backends.aenet.folder import read_record
from pyita.backends.aenet.run import run_aenet_run
from pyita.backends.aenet.settings import AenetSettings
from pyita.errors import PyitaError
from pyita.io.atomic import atomic_output_dir
from pyita.io.records import jsonable
from pyita.paths import user_cache_dir
from pyita.reference import resolve_references
from pyita.structure import Structure


def train_and_evaluate_aenet(train_structures: Sequence[Structure], test_structures: Sequence[Structure],
                             settings: AenetSettings | dict | None, workdir: str | Path,
                             aenet_bin: str | Path | None = None, progress: bool = False,
                             keep_epoch_networks: bool = False) -> dict:
    """Prepare, run and parse one aenet training for the experiment runner.

    ``train_structures`` may include derived structures (their placeholder forces are written for
    generate.x; train.x fits energies only); ``test_structures`` are predicted as given (no MAXENERGY
    filter: the runner owns the split). Reference energies come from ``settings["reference_energies"]`` or
    are fitted on the training originals. ``workdir`` becomes the run folder (must be new or empty). To start
    several conditions from the same initial weights, run once with ``iterations = 0`` and pass that
    folder as ``initial_networks``. Returns energy_errors, force_errors (``pyita.metrics.error_tables`` rows),
    history (per epoch: epoch, train_energy_mae, train_energy_rmse in meV/atom; aenet's own test columns only
    when it had a test set), seconds (wall time of prepare + aenet), and rundir.
    """
    start = time.perf_counter()
    settings = AenetSettings.from_dict(settings)
    train_structures, test_structures = list(train_structures), list(test_structures)
    if not train_structures or not test_structures:
        raise PyitaError("aenet needs at least one training and one test structure")
    find_executables(aenet_bin)     # fail before writing anything when aenet is absent
    species: list[str] = []
    for s in train_structures + test_structures:
        for sym in s.symbols:
            if sym not in species:
                species.append(sym)
    originals = [s for s in train_structures if not s.is_derived] or train_structures
    resolved = resolve_references(originals, species, settings.reference_energies)
    refs = resolved.energies
    by_source = {s.source: s for s in originals if s.source}
    train = []
    for k, s in enumerate(train_structures):
        parent = None
        if s.is_derived:
            p = s.info.get("parent")
            parent = by_source.get(s.info.get("parent_source"))
            if parent is None and isinstance(p, int) and 0 <= p < len(train_structures) \
                    and train_structures[p].symbols == s.symbols:      # index into the list augment() saw
                parent = train_structures[p]
        train.append(Entry(s, placeholder=None if parent is None else parent.forces, role="train",
                            source=s.source or f"train{k + 1:05d}",
                            parent=str(s.info.get("parent_source") or "")))
    test = [Entry(s, role="test", source=s.source or f"test{k + 1:05d}") for k, s in enumerate(test_structures)]
    assign_names(train, "xsf/train")
    assign_names(test, "xsf/test")
    record = {"command": "train_and_evaluate_aenet", "split": "given by the caller",
              "reference_energies_origin": resolved.origin, "reference_energy_fit": resolved.fit,
              "counts": {"structures": len(train) + len(test),
                         "derived": sum(1 for s in train_structures if s.is_derived)}}
    with atomic_output_dir(workdir) as tmp:
        write_run_folder(tmp, train, test, species, refs, settings, record)
    results = run_aenet_run(workdir, aenet_bin=aenet_bin, progress=progress, keep_epoch_networks=keep_epoch_networks)
    return {"energy_errors": results["energy_errors"], "force_errors": results["force_errors"],
            "history": results["history"], "seconds": time.perf_counter() - start,
            "step_seconds": results.get("seconds"), "summary": results["summary"],
            "reference_energies": refs, "rundir": str(workdir)}


def _initial_networks(parents: Sequence[Structure], test: Sequence[Structure], settings: AenetSettings,
                      seed: int, aenet_bin, cache: Path) -> Path:
    """Untrained networks shared by every condition of a trial (aenet seeds its weights from the clock).

    Made once per (seed, architecture, descriptor, species) by train.x with ITERATIONS 0 on two parents, and
    kept in ``cache`` (several worker processes may race: the first complete folder wins).
    """
    import hashlib
    import tempfile

    species = sorted({sym for s in list(parents) + list(test) for sym in s.symbols})
    key = json.dumps([seed, [list(x) for x in settings.hidden], settings.setup.as_dict(), species])
    target = cache / f"initial-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".initial-", dir=cache))
    try:
        init = AenetSettings(**{**{f: getattr(settings, f) for f in AenetSettings.__dataclass_fields__},
                                "iterations": 0, "initial_networks": None, "max_energy": None})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train_and_evaluate_aenet(list(parents[:2]), list(test[:1]), init, scratch / "run", aenet_bin=aenet_bin)
        nets = scratch / "networks"
        nets.mkdir()
        for nn in read_record(scratch / "run")["networks"].values():
            shutil.copyfile(scratch / "run" / nn, nets / nn)
        (nets / "README.txt").write_text(f"Untrained aenet networks (ITERATIONS 0) for {key}\n")
        try:
            os.replace(nets, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def unsupported(augment: dict | None, trainer: dict | None) -> str | None:
    """Why aenet cannot train a condition with these settings (None: it can)."""
    augment, trainer = augment or {}, trainer or {}
    if augment.get("on_the_fly"):
        return "aenet cannot draw fresh displacements every epoch (on_the_fly)"
    if augment.get("parent_child_weight"):
        return "aenet has no parent–child loss (parent_child_weight)"
    if augment.get("weight") not in (None, 1, 1.0):
        return "aenet's train.x has no per-structure weights (augment.weight)"
    if trainer.get("force_weight"):
        return "aenet's Fortran train.x fits energies only (force_weight)"
    return None


def aenet_settings(trainer: dict | None) -> tuple[AenetSettings, str | None]:
    """The ``AenetSettings`` of an experiment's trainer table, and its ``aenet_bin``; raises on a setting aenet
    cannot use (the experiment config calls it too, before anything is written)."""
    trainer = dict(trainer or {})
    aenet_bin = trainer.pop("aenet_bin", None)
    trainer.pop("keep_runs", None)   # the runner's business: it passes ``workdir`` to keep the run folder
    return AenetSettings.from_dict(trainer), aenet_bin


def experiment_backend(parents: Sequence[Structure], derived: Sequence[Structure], test: Sequence[Structure],
                       trainer: dict | None = None, augment: dict | None = None, seed: int = 0,
                       reference_energies: dict | None = None, workdir: str | Path | None = None,
                       init_seed_offset: int = 0, scratch: str | Path | None = None) -> ConditionResult:
    """The experiment runner's backend call for ``backend = "aenet"``.

    Trains on parents + derived, predicts ``test``; returns a ``ConditionResult`` (energies as compared,
    signed force errors). Every condition of a trial starts from the same untrained networks (made once
    per seed, cached under $PYITA_AENET_CACHE or aenet/ in ``pyita.paths.user_cache_dir()``); ``init_seed_offset``
    ≠ 0 takes those of seed + offset instead (aenet draws them from the clock, so each seed's set is an
    independent draw).
    ``trainer`` may name ``aenet_bin`` and ``keep_runs``; the run folder is kept under ``workdir`` when that
    is given, else in a temporary folder (under ``scratch``, default the system's) removed after success.
    What aenet cannot do (``unsupported``) raises PyitaError.
    """
    import tempfile

    why = unsupported(augment, trainer)
    if why:
        raise PyitaError(f"{why}: use the embedded backend")
    settings, aenet_bin = aenet_settings(trainer)
    if reference_energies and not settings.reference_energies:
        settings.reference_energies = dict(reference_energies)
    start = time.perf_counter()
    if settings.initial_networks is None:
        cache = Path(os.environ.get("PYITA_AENET_CACHE") or user_cache_dir() / "aenet")
        settings.initial_networks = str(_initial_networks(parents, test, settings, seed + init_seed_offset,
                                                          aenet_bin, cache))
    kept = workdir is not None
    if not kept and scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    run = Path(workdir) if kept else Path(tempfile.mkdtemp(prefix="pyita-aenet-", dir=scratch)) / "run"
    result = train_and_evaluate_aenet(list(parents) + list(derived), list(test), settings, run,
                                      aenet_bin=aenet_bin)
    rows = [r for r in result["energy_errors"] if r["energy_ref_eV"] != ""]
    last = result["history"][-1] if result["history"] else {}
    if not kept:
        shutil.rmtree(run.parent, ignore_errors=True)
    return ConditionResult(
        energy_ref=np.array([r["energy_ref_eV"] for r in rows]),
        energy_pred=np.array([r["energy_pred_eV"] for r in rows]), n_atoms=np.array([r["n_atoms"] for r in rows]),
        force_errors=np.array([r[f"f{c}_error"] for r in result["force_errors"] if r["fx_ref"] != "" for c in "xyz"]),
        history=jsonable(result["history"]), seconds=time.perf_counter() - start,
        train_energy_mae=last.get("train_energy_mae", float("nan")),
        train_energy_rmse=last.get("train_energy_rmse", float("nan")),
        rundir=str(run) if kept else None)
