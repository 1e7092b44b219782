"""The embedded fit as one function call: structures and settings in, trained potential and history out.

This is what ``pyita train`` and the embedded backend of the experiment runner call. Splitting, MAXENERGY
filtering and file handling happen before (``pyita.train.data``); here the given training structures are
featurized (with the on-disk cache), normalised, optionally augmented (once, or afresh every epoch) and fitted.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from pyita import __version__
from pyita.augment.settings import AugmentSettings
from pyita.descriptors import ChebyshevDescriptor, featurize
from pyita.errors import InputError, PyitaError
from pyita.model import Potential, load_potential, resolve_device
from pyita.reference import resolve_references
from pyita.structure import Structure, geometry_key
from pyita.train.cache import cached_features
from pyita.train.data import FeatureSet, check_structures, fit_normalization, species_of
from pyita.descriptors.jacobian import StreamedJacobians, chunked, descriptor_jacobians, jacobian_bytes
from pyita.memory import memory_limits
from pyita.train.budget import jacobians_streamed
from pyita.train.losses import EnergyLoss, ForceLoss, ParentChildLoss
from pyita.train.trainer import StopFlag, Trainer
from pyita.train.settings import TrainSettings

__all__ = ["TrainResult", "TrainSettings", "train", "initial_potential"]


@dataclass
class TrainResult:
    """The trained potential (best validation epoch when a validation set was given) and its history."""

    potential: Potential
    history: list[dict]
    settings: TrainSettings
    seconds: float
    counts: dict = field(default_factory=dict)


def _fingerprint(*sets: Sequence[Structure]) -> str:
    """Identifies the data a checkpoint belongs to: geometry and energy of every structure, in order."""
    h = hashlib.blake2b(digest_size=16)
    for structures in sets:
        h.update(b"|")
        for s in structures:
            h.update(geometry_key(s).encode())
            h.update(repr(s.energy).encode())
    return h.hexdigest()


def _weights(structures: Sequence[Structure], derived_weight: float) -> list[float]:
    return [float(s.info.get("weight", 1.0)) * (derived_weight if s.is_derived else 1.0) for s in structures]


def train(training: Sequence[Structure], validation: Sequence[Structure] | None = None,
          settings: TrainSettings | None = None, *, test: Sequence[Structure] | None = None,
          reference_energies: dict[str, float] | None = None, species: Sequence[str] | None = None,
          checkpoint: str | Path | None = None, resume: bool = False, cache_dir: str | Path | None = None,
          use_cache: bool = True, progress: bool = False, stop: StopFlag | None = None) -> TrainResult:
    """Fit a potential to ``training``; ``validation`` (optional) selects the best epoch and stops early,
    ``test`` (optional) is only reported per epoch.

    ``reference_energies`` are the atomic energies subtracted before fitting (e.g. generate.in TYPES);
    species without one are fitted by least squares on composition with the given ones held fixed
    (``resolve_references``). ``species`` fixes the species order
    (it decides the descriptor's typespin weights); by default TYPES order, then first appearance.
    With ``settings.model.initial_networks`` training starts from those networks and keeps their species,
    reference energies, normalisation, hidden layers and descriptor (see ``initial_potential`` and
    ``ModelSettings.adopt``); the result's settings are those adopted ones.
    Features of original structures are cached on disk (``cache_dir``, default ``pyita.train.cache.default_cache_dir``),
    keyed by geometry and descriptor settings; ``use_cache=False`` skips the cache.
    """
    settings = settings or TrainSettings()
    started = time.perf_counter()
    validation, test = list(validation or []), list(test or [])
    training = list(training)
    originals = _checked_originals(training, validation, test, settings)
    start, settings, species, reference_energies = _starting_point(settings, originals, training,
                                                                   training + validation + test, species,
                                                                   reference_energies)
    device = resolve_device(settings.runtime.device)
    if start is None:
        start = _fresh_potential(settings, species, reference_energies)
    potential = start.to(device)
    training = _with_derived(training, originals, settings)
    losses, train_set, val_set, test_set = _training_sets(potential, training, validation, test, settings, device,
                                                          cache_dir if use_cache else False, progress)
    fresh = _fresh_epochs(train_set, training, potential, settings) if settings.on_the_fly else None
    if settings.loss.parent_child_weight > 0:
        losses.append(_parent_child_loss(train_set, fresh, settings.loss.parent_child_weight))
    trainer = Trainer(potential, settings, train_set, losses, validation=val_set, test=test_set, fresh=fresh,
                      checkpoint=checkpoint, fingerprint=_fingerprint(training, validation))
    history = trainer.run(progress=progress, resume=resume, stop=stop)
    counts = {"train": len(training), "train_derived": sum(s.is_derived for s in training),
              "validation": len(validation), "test": len(test)}
    potential.metadata = {
        "pyita_version": __version__,
        "settings": settings.as_dict(),
        "seed": settings.seed,
        "species": list(species),
        "reference_energies": reference_energies,
        "counts": counts,
        "best_epoch": trainer.best["epoch"] if trainer.best["state"] is not None else len(history),
        "history": history,
        # what `pyita predict` recognises as seen in training: geometry keys of the original structures
        "fingerprints": {"training": [geometry_key(s) for s in training if not s.is_derived],
                         "validation": [geometry_key(s) for s in validation]},
    }
    return TrainResult(potential, history, settings, time.perf_counter() - started, counts)


def _checked_originals(training: list[Structure], validation: list[Structure], test: list[Structure],
                       settings: TrainSettings) -> list[Structure]:
    """The original training structures, once the data and settings are known to allow a fit at all."""
    check_structures(training, "training data")
    for name, data in (("validation data", validation), ("test data", test)):
        if data:
            check_structures(data, name)
    if settings.optimizer.patience is not None and not validation:
        raise PyitaError("early stopping (patience) needs a validation set")
    originals = [s for s in training if not s.is_derived]
    if len(originals) < 2:
        raise PyitaError(f"training needs at least 2 original structures, got {len(originals)} "
                         "(energy normalisation and any fit need more than one label)")
    return originals


def _starting_point(settings: TrainSettings, originals: list[Structure], training: list[Structure],
                    structures: list[Structure], species: Sequence[str] | None,
                    reference_energies: dict[str, float] | None):
    """The initial networks, if given (``None`` otherwise), with the settings, species order and reference
    energies training then uses: the networks' own, or worked out from ``structures`` and the ones given."""
    start = None
    if settings.model.initial_networks is not None:
        start = initial_potential(settings.model.initial_networks, structures, species, reference_energies)
        settings = replace(settings, model=settings.model.adopt(start))
        species, reference_energies = start.species, start.reference_energies()
    else:
        species = species_of(structures, preferred=species or list(reference_energies or ()))
    untrained = [s for s in species_of(structures) if s not in species_of(training)]
    if untrained:
        warnings.warn(f"species {', '.join(untrained)} occur only outside the training set: their networks "
                      "are not trained (they keep their initial weights)", stacklevel=3)
    reference_energies = resolve_references(originals, species, reference_energies, warn=False).energies
    return start, settings, species, reference_energies


def _fresh_potential(settings: TrainSettings, species: Sequence[str], reference_energies: dict[str, float]):
    """New networks from the model settings, their weights drawn with the init seed (default: the seed)."""
    init_seed = settings.seed if settings.init_seed is None else settings.init_seed
    model = settings.model
    return Potential(ChebyshevDescriptor(species, **model.descriptor), model.hidden, reference_energies,
                     seed=init_seed, weight_init=model.weight_init)


def _with_derived(training: list[Structure], originals: list[Structure], settings: TrainSettings) -> list[Structure]:
    """The training set with its derived copies when augmenting once; on the fly, one trial draw now refuses
    unusable parents before training starts rather than at epoch 1."""
    if settings.augment is not None and not settings.on_the_fly:
        return training + _derive(originals, settings.augment, settings.seed)
    if settings.on_the_fly:
        _derive(originals[:1], settings.augment, settings.seed)
    return training


def _training_sets(potential: Potential, training: list[Structure], validation: list[Structure],
                   test: list[Structure], settings: TrainSettings, device, cache_dir, progress: bool):
    """The loss terms (energy, and forces if weighted) and the featurized training, validation and test sets;
    the potential's energy normalisation is fitted here unless it comes with initial networks."""
    descriptor = potential.descriptor
    features = _features(descriptor, training + validation + test, cache_dir, device, progress)
    train_features = features[:len(training)]
    val_features = features[len(training):len(training) + len(validation)]
    test_features = features[len(training) + len(validation):]
    if settings.model.initial_networks is None:   # initial networks keep the normalisation they were trained with
        fit_normalization(potential, training, train_features, settings.model.energy_normalization)
    losses: list = [EnergyLoss(float(potential.energy_scale))]
    jac: dict = {}
    if settings.loss.force_weight > 0:
        force_loss, jac = _force_training(descriptor, training, validation, settings, device)
        losses.append(force_loss)
    train_set = FeatureSet.build(training, train_features, potential, _weights(training, settings.loss.derived_weight),
                                 jac.get("train"))
    val_set = FeatureSet.build(validation, val_features, potential, jacobians=jac.get("val")) if validation else None
    test_set = FeatureSet.build(test, test_features, potential) if test else None
    return losses, train_set, val_set, test_set


def initial_potential(path: str | Path, structures: Sequence[Structure] = (), species: Sequence[str] | None = None,
                      reference_energies: dict[str, float] | None = None) -> Potential:
    """The potential at ``path`` (``load_potential``: a model file or aenet networks) to start training from,
    refusing data with species it has no network for, and a species order or reference energies that
    contradict its own (they decide the descriptor and what its networks learnt)."""
    potential = load_potential(path)
    known = set(potential.species)
    for s in structures:
        unknown = sorted(set(s.symbols) - known)
        if unknown:
            raise InputError(f"the data has species {', '.join(unknown)} (e.g. in {s.source or 'a structure'}) "
                             f"but these initial networks cover only {', '.join(potential.species)}", path)
    if species is not None and tuple(species) != potential.species:
        raise PyitaError(f"species order {', '.join(species)} differs from that of the initial networks {path} "
                         f"({', '.join(potential.species)}), which decides their descriptor")
    theirs = potential.reference_energies()
    differ = [f"{s} {e} (theirs {theirs[s]})" for s, e in (reference_energies or {}).items()
              if s in theirs and abs(e - theirs[s]) > 1e-9]
    if differ:
        raise PyitaError(f"reference energies {', '.join(differ)} differ from those of the initial networks {path}; "
                         "leave them out (the networks' own are used) or make them match")
    return potential


def _parent_child_loss(train_set: FeatureSet, fresh, weight: float) -> ParentChildLoss:
    """The parent–child term, scaled by the training data's Taylor shifts (fixed derived structures, or
    the first on-the-fly draw)."""
    try:
        return ParentChildLoss.for_data(fresh(1) if fresh is not None else train_set, weight)
    except ValueError:
        raise PyitaError("the parent–child loss needs derived structures whose parents are in the training set "
                         "(augment, or give the augmented data with its parents)") from None


def _force_training(descriptor, train: list[Structure], validation: list[Structure], settings: TrainSettings,
                    device):
    """The force loss term, and descriptor Jacobians of the structures with force labels. With a force fraction
    below 1 the term uses a seeded random share of the training structures with forces (at least one), or of
    the atoms of each (at least one per structure), and only those need Jacobians; the validation set keeps
    all of its own. Jacobians that do not fit in the memory available (with Adam: together with a copy of the
    largest mini-batch's) are built per chunk (L-BFGS) or per mini-batch (Adam) instead; when not even one of
    those fits, training is refused here, before it starts (``pyita.train.budget``)."""
    with_forces = {name: [k for k, s in enumerate(data) if s.forces is not None and not s.is_derived]
                   for name, data in (("train", train), ("val", validation))}
    if not with_forces["train"]:
        raise PyitaError("force training needs training structures with force labels")
    columns = None   # with a fraction of atoms: structure → the atoms whose forces the term uses
    loss, method = settings.loss, settings.optimizer.method
    if loss.force_fraction < 1 and loss.force_fraction_of == "structures":
        chosen = np.random.default_rng([settings.seed, 7]).permutation(len(with_forces["train"]))
        keep = max(1, int(round(loss.force_fraction * len(chosen))))
        with_forces["train"] = sorted(with_forces["train"][k] for k in chosen[:keep])
    elif loss.force_fraction < 1:
        draw = np.random.default_rng([settings.seed, 8])
        columns = {k: np.sort(draw.choice(n, max(1, int(round(loss.force_fraction * n))), replace=False))
                   for k in with_forces["train"] for n in [len(train[k])]}
    share = {k: len(atoms) / len(train[k]) for k, atoms in (columns or {}).items()}   # of a structure's blocks, ≈
    sets = {"train": train, "val": validation}
    sizes = {name: {k: jacobian_bytes([sets[name][k]], descriptor) * (share.get(k, 1.0) if name == "train" else 1.0)
                    for k in with_forces[name]} for name in sets}
    streamed = jacobians_streamed(sizes, {name: chunked(with_forces[name], sets[name]) for name in sets}, method,
                                  settings.optimizer.batch_size, memory_limits(settings.runtime.max_memory),
                                  loss.force_fraction if columns is not None else 1.0)
    reference = np.concatenate([(train[k].forces if columns is None else train[k].forces[columns[k]]).ravel()
                                for k in with_forces["train"]])
    build = partial(StreamedJacobians, descriptor) if streamed else partial(descriptor_jacobians, descriptor)
    jacobians = {name: build(sets[name], with_forces[name], device=device, columns=columns if name == "train" else None)
                 for name in sets if with_forces[name]}
    return ForceLoss(float(np.sqrt(np.mean(reference**2))) or 1.0, loss.force_weight), jacobians


def _features(descriptor, structures: list[Structure], cache_dir, device, progress: bool) -> list:
    """Features of every structure: originals through the disk cache (unless ``cache_dir`` is False),
    derived structures computed directly — they are rarely trained on twice and would bloat the cache."""
    cached = [k for k, s in enumerate(structures) if cache_dir is not False and not s.is_derived]
    direct = sorted(set(range(len(structures))) - set(cached))
    features: list = [None] * len(structures)
    if cached:
        found = cached_features(descriptor, [structures[k] for k in cached], cache_dir=cache_dir, device=device,
                                progress=progress)
        for k, f in zip(cached, found):
            features[k] = f
    if direct:
        for k, f in zip(direct, featurize(descriptor, [structures[k] for k in direct], progress=progress,
                                          device=device)):
            features[k] = f
    return features


def _fresh_epochs(train_set: FeatureSet, train: list[Structure], potential: Potential, settings: TrainSettings):
    """On-the-fly augmentation: epoch → training set plus freshly derived copies of its originals
    (seeded by seed and epoch; featurized each epoch, never cached, as they are never seen again)."""
    positions = [k for k, s in enumerate(train) if not s.is_derived]
    originals = [train[k] for k in positions]

    def epoch_set(epoch: int) -> FeatureSet:
        derived = _derive(originals, settings.augment, settings.seed * 100_003 + epoch, quiet=True)
        features = featurize(potential.descriptor, derived, device=potential.device)
        extra = FeatureSet.build(derived, features, potential, [settings.loss.derived_weight] * len(derived),
                                 parents=[positions[d.info["parent"]] for d in derived])
        return train_set.concat(extra)

    return epoch_set


def _derive(parents: list[Structure], augment: AugmentSettings, seed: int, quiet: bool = False) -> list[Structure]:
    """Taylor-derived copies of the training parents (``info["parent"]`` indexes ``parents``), drawn with ``seed``.

    ``quiet`` silences warnings already given for the first draw (e.g. a shortfall), not to repeat them every
    epoch; those of the settings themselves (a large δ) came when they were made.
    """
    from pyita.augment import iter_augmented

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draw = replace(augment, seed=seed)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return [d for _, _, derived in iter_augmented(parents, draw, len(parents)) for d in derived]
