"""``pyita train`` end to end: read data, filter (MAXENERGY), split by parent, train, save, evaluate."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pyita import __version__
from pyita.train.fit import initial_potential, train
from pyita.errors import PyitaError
from pyita.io import open_source
from pyita.io.atomic import existing_ancestor
from pyita.io.locks import exclusive
from pyita.io.outputs import data_inputs, guard_output
from pyita.io.tables import write_csv
from pyita.metrics import error_tables
from pyita.predict import predict
from pyita.reference import check_max_energy, check_reference_energies, resolve_references
from pyita.structure import LabelKeys, held_out_without_copies
from pyita.train.data import filter_max_energy, species_of, split_by_parent, take
from pyita.train.trainer import graceful_stop
from pyita.train.settings import TrainSettings


def checkpoint_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".ckpt")


def history_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".history.csv")


def _saved_kind(path: Path) -> str | None:
    """The ``kind`` a file saved by PyITA through torch holds (None for anything else)."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - anything torch cannot read is not ours
        return None
    return payload.get("kind") if isinstance(payload, dict) else None


def is_model_file(path: Path) -> bool:
    """True for a model file `pyita train` wrote (what --overwrite may replace)."""
    from pyita.model.potential import MODEL_KIND

    return _saved_kind(path) == MODEL_KIND


def is_checkpoint_file(path: Path) -> bool:
    """True for a checkpoint `pyita train` wrote."""
    from pyita.train.trainer import CHECKPOINT_KIND

    return _saved_kind(path) == CHECKPOINT_KIND


def is_history_file(path: Path) -> bool:
    """True for a training history `pyita train` wrote (its header starts with the epoch and the loss)."""
    try:
        with open(path, errors="replace") as handle:
            return handle.readline(4096).startswith("epoch,loss")
    except OSError:
        return False


def guard_train_outputs(out: str | Path, inputs: list[Path], overwrite: bool, resume: bool) -> None:
    """The model and the files beside it (history, checkpoint) are all outputs of `pyita train`: each is
    refused when it is an input, a folder, or a file `pyita train` did not write, and an existing one needs
    ``overwrite`` (or ``resume``, which continues from the checkpoint and replaces the other two)."""
    if str(out).endswith(("/", os.sep)) or Path(out).name in ("", ".", ".."):
        raise PyitaError(f"--out {out} names a folder; name the model file, e.g. {Path(out) / 'model.pt'}")
    out = Path(out)
    checkpoint = checkpoint_path(out)
    if resume:
        if not checkpoint.is_file():
            raise PyitaError(f"--resume: no checkpoint {checkpoint} to continue from")
        if not is_checkpoint_file(checkpoint):
            raise PyitaError(f"--resume: {checkpoint} is not a checkpoint of `pyita train`; it was left untouched")
    elif (checkpoint.exists() or checkpoint.is_symlink()) and not overwrite:
        raise PyitaError(f"{checkpoint} exists: the checkpoint of an interrupted run? --resume continues it, "
                         "--overwrite starts again (or choose another --out)")
    for path, is_previous in ((out, is_model_file), (history_path(out), is_history_file),
                              (checkpoint, is_checkpoint_file)):
        guard_output(path, inputs, "train", overwrite or resume, folder=False, is_previous=is_previous)


def run_train(data: str, out: str | Path, settings: TrainSettings, test_fraction: float = 0.1,
              validation_fraction: float = 0.0, max_energy: float | None = None,
              references: dict[str, float] | None = None, resume: bool = False, overwrite: bool = False,
              cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = True,
              keys: LabelKeys | None = None) -> dict:
    """Train on ``data`` (anything ``open_source`` reads; ``keys`` name the labels of an ASE file) and write
    ``out`` (the model) next to ``out.history.csv``; returns a summary with the final test errors.

    Reference energies follow ``resolve_references``: ``references``, else generate.in's TYPES (unless the
    all-zero placeholders), else a least-squares fit on the originals; with ``settings.model.initial_networks``, those
    networks' own (``references`` must then agree with them).
    The split is by parent and seeded; the test set's sources are recorded in the model.
    """
    max_energy = check_max_energy(max_energy)
    references = check_reference_energies(references)
    started = time.perf_counter()
    source = open_source(data, keys=keys)
    initial = settings.model.initial_networks
    inputs = data_inputs(data, source) + ([Path(initial)] if initial else [])
    guard_train_outputs(out, inputs, overwrite, resume)
    out = Path(out)
    with exclusive(existing_ancestor(out.parent) / f".{out.name}.lock", f"model {out}"):
        return _train_from_source(data, source, out, settings, test_fraction, validation_fraction, max_energy,
                                  references, resume, cache_dir, use_cache, progress, started)


def _train_from_source(data, source, out: Path, settings: TrainSettings, test_fraction, validation_fraction,
                       max_energy, references, resume, cache_dir, use_cache, progress, started) -> dict:
    checkpoint = checkpoint_path(out)
    structures = list(source)
    if not structures:
        raise PyitaError(f"{data}: no structures")
    originals = [s for s in structures if not s.is_derived]
    types = source.generate_in.types if source.generate_in is not None else {}
    order = list(references or types)
    species = species_of(structures, order)
    if settings.model.initial_networks is not None:
        theirs = initial_potential(settings.model.initial_networks, structures, reference_energies=references)
        resolved = resolve_references(originals, species, theirs.reference_energies(),
                                      given_origin="initial networks", warn=False)
    else:
        resolved = resolve_references(originals, species, references, types, warn=False)
    references = resolved.energies
    kept = filter_max_energy(structures, references, max_energy)
    dropped = len(structures) - len(kept)
    structures = take(structures, kept)
    train_idx, val_idx, test_idx = split_by_parent(structures, test_fraction, validation_fraction, settings.seed)
    val_idx, test_idx = held_out_without_copies(structures, train_idx, val_idx, test_idx)

    def pick(indices):
        return take(structures, indices)

    with graceful_stop() as stop:
        result = train(pick(train_idx), pick(val_idx), settings, test=pick(test_idx),
                       reference_energies=references,
                       species=None if settings.model.initial_networks else species,
                       checkpoint=checkpoint, resume=resume, cache_dir=cache_dir, use_cache=use_cache,
                       progress=progress, stop=stop)
    potential = result.potential
    test = pick(test_idx)
    test_summary = {}
    if test:
        predictions = predict(potential, test)
        test_summary = error_tables(test, [p.energy for p in predictions], [p.forces for p in predictions],
                                    potential.reference_energies())[2]
    potential.metadata.update({
        "data": str(data),
        "label_keys": source.keys.as_dict(),
        "reference_energies_origin": resolved.origin,
        "max_energy": max_energy,
        "dropped_by_max_energy": dropped,
        "test_fraction": test_fraction,
        "validation_fraction": validation_fraction,
        "test_sources": [s.source for s in test],
        "validation_sources": [s.source for s in pick(val_idx)],
        "test_errors": test_summary,
        "train_seconds": round(result.seconds, 2),
    })
    potential.save(out)
    write_csv(history_path(out), result.history)
    checkpoint.unlink(missing_ok=True)   # the model holds everything it had; keep no 50× larger leftover
    return {"pyita_version": __version__, "model": str(out), "counts": {**result.counts, "dropped": dropped},
            "epochs": len(result.history), "best_epoch": potential.metadata["best_epoch"],
            "last": result.history[-1] if result.history else {}, "test_errors": test_summary,
            "seconds": time.perf_counter() - started}
