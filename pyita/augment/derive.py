"""Where each parent's derived structures are displaced, and their first-order labels: the moves a strategy
picks, the Taylor energy and provenance of each derived structure, and why a run made fewer than asked."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from pyita.augment.settings import AugmentSettings
from pyita.augment.strategies import (Move, SequentialPlan, balanced_moves, copies_for, copies_total,
                                      random_all_moves)
from pyita.augment.taylor import displaced, taylor_shift
from pyita.io.sources import check_labels
from pyita.io.xsf import DERIVED_MARK
from pyita.structure import Structure


def describe(parent: Structure, index: int, move: Move, settings: AugmentSettings, copy: int,
             parent_forces: list | None = None) -> tuple[float, dict, list[str]]:
    """Taylor energy, ``info`` and provenance comment lines of one derived structure.

    ``parent_forces`` (the parent's forces as nested lists) saves a conversion when called per move.
    """
    if move.atom is None:
        shift = taylor_shift(parent.forces, move.field)
    else:
        shift = taylor_shift(parent_forces if parent_forces is not None else parent.forces, move.vector, move.atom)
    energy = parent.energy + shift  # E − F·D
    info = {
        "derived": True,
        "parent": index,
        "parent_source": parent.source,
        "copy": copy,
        "atom": -1 if move.atom is None else move.atom,
        "direction": move.direction or "all",
        "strategy": settings.strategy,
        "delta": settings.delta,
        "seed": settings.seed,
        "taylor_shift": shift,
    }
    if move.atom is None:
        norms = np.sqrt(np.einsum("ij,ij->i", move.field, move.field))
        what = f"all {len(parent)} atoms, rms={settings.delta:g} A, max={norms.max():.6f} A"
    else:
        vector = move.vector
        what = f"atom {move.atom + 1} ({parent.symbols[move.atom]}) {move.direction}: " \
               f"{vector[0]:.6f} {vector[1]:.6f} {vector[2]:.6f} A"
        info["displacement"] = list(vector)
    comments = [
        f"{DERIVED_MARK} {parent.source or index}",
        f"pyita displacement: {what}",
        f"pyita settings: strategy={settings.strategy} delta={settings.delta:g} seed={settings.seed} "
        f"copy={copy} E_shift=-F.D={shift:.8f} eV",
        "pyita note: force columns are the parent's, written as placeholders; they are not labels",
    ]
    return energy, info, comments


def moves_for(parent: Structure, index: int, rank: int, settings: AugmentSettings) -> list[Move]:
    """Displacements of one parent under a per-parent strategy (balanced, random-all).

    Depends only on the parent, its index in the data set (the random stream is seeded by (seed, index))
    and its rank among augmentable parents (how many copies it gets when a is not an integer), so parents
    can be processed in any order or in parallel with the same result.
    """
    count = copies_for(rank, settings.a)
    if settings.strategy == "balanced":
        return balanced_moves(parent, count, settings.delta, (settings.seed, index), settings.max_force)
    if settings.strategy == "random-all":
        rng = np.random.default_rng([settings.seed, index])
        return random_all_moves(parent, count, settings.delta, rng, settings.cap, settings.max_force)
    raise ValueError(f"{settings.strategy} is not a per-parent strategy")


def iter_moves(parents: Iterable[Structure], settings: AugmentSettings, n_parents: int | None = None,
               exclude: Iterable[int] = ()) -> Iterator[tuple[int, Structure, list[Move]]]:
    """Stream (parent index, parent, moves): where each derived structure of each parent is displaced.

    ``exclude`` holds parent indices never augmented (e.g. the test split); parents that are themselves
    derived structures are not augmented either. The sequential strategy needs ``n_parents`` (the number
    of non-excluded parents) up front to know its budget a·N.
    """
    excluded = set(exclude)
    plan = None
    if settings.strategy == "sequential":
        if n_parents is None:
            raise ValueError("the sequential strategy needs n_parents")
        plan = SequentialPlan(settings.a, n_parents, settings.delta, settings.max_force)
    rank = 0  # position among non-excluded parents
    for index, parent in enumerate(parents):
        if index in excluded:
            yield index, parent, []
            continue
        rank += 1
        if parent.is_derived:
            yield index, parent, []
            continue
        check_labels(parent)
        moves = plan.moves(parent) if plan is not None else moves_for(parent, index, rank - 1, settings)
        yield index, parent, moves


def shortfall_message(settings: AugmentSettings, asked: int, made: int, n_parents: int, empty: int) -> str:
    """The one warning for a run that made fewer than the ⌊a·N⌋ derived structures asked for, and why.

    ``empty`` counts parents that were due some and gave none (derived structures, or nothing movable).
    """
    if settings.strategy == "random-all":
        limits = ["a parent with a single atom is not displaced"]
        if settings.max_force is not None:
            limits.append(f"nor one with an atom with |F| > --max-force {settings.max_force:g} eV/Å")
    else:
        limits = ["a parent gives at most 6 per atom (each atom moved once along ±x, ±y, ±z)"]
        if settings.max_force is not None:
            limits.append(f"atoms with |F| > --max-force {settings.max_force:g} eV/Å are not moved")
    none = ""
    if empty:
        none = f" ({empty} parent{'s' * (empty != 1)} gave none)"
        limits.append("derived structures among the parents are not augmented again")
    return (f"{settings.strategy}: made {made} of the {asked} derived structures asked for "
            f"(a = {settings.a:g} × {n_parents} parents), {asked - made} fewer{none}; limits: " + "; ".join(limits))


def why_nothing_made(parents: Iterable[Structure], settings: AugmentSettings, exclude: Iterable[int] = ()) -> str:
    """Why no parent gave a derived structure, parent by parent (the reason ``pyita augment`` stops with;
    called only then, so reading the parents again costs nothing that matters)."""
    excluded = set(exclude)
    reasons: Counter = Counter()
    rank = 0
    for index, parent in enumerate(parents):
        if index in excluded:
            reasons["excluded"] += 1
            continue
        rank += 1
        if parent.is_derived:
            reasons["derived"] += 1
        elif settings.strategy != "sequential" and copies_for(rank - 1, settings.a) == 0:
            reasons["no share"] += 1
        elif settings.strategy == "random-all" and len(parent) < 2:
            reasons["single atom"] += 1
        else:  # the one cause left: the force limit
            reasons["force"] += 1
    n = sum(reasons.values())
    asked = copies_total(rank, settings.a)
    if rank and asked == 0:
        return f"a = {settings.a:g} × {rank} parents rounds down to 0 derived structures"
    limit = f"|F| > --max-force {settings.max_force or 0:g} eV/Å"  # used only when the limit is set
    every = {
        "excluded": f"all {n} parents are excluded (--exclude)",
        "derived": "every parent is itself a derived structure (PyITA does not augment those again)",
        "single atom": "every parent has a single atom (random-all cannot displace it without moving it whole)",
        "force": f"every parent has an atom with {limit}" if settings.strategy == "random-all"
        else f"every atom of every parent has {limit}",
    }
    if len(reasons) == 1 and next(iter(reasons)) in every:
        return every[next(iter(reasons))]
    some = {
        "excluded": "{k} are excluded (--exclude)",
        "derived": "{k} are derived structures (not augmented again)",
        "no share": f"{{k}} get none of the ⌊a·N⌋ = {asked}",
        "single atom": "{k} have a single atom",
        "force": f"{{k}} have an atom with {limit}" if settings.strategy == "random-all"
        else f"every atom of {{k}} has {limit}",
    }
    return f"of the {n} parents, " + "; ".join(some[r].format(k=k) for r, k in reasons.items())


def iter_augmented(parents: Iterable[Structure], settings: AugmentSettings, n_parents: int | None = None,
                   exclude: Iterable[int] = ()) -> Iterator[tuple[int, Structure, list[Structure]]]:
    """Stream (parent index, parent, derived structures); parents are consumed one at a time.

    ``exclude`` holds parent indices never augmented (e.g. the test split). The sequential strategy needs
    ``n_parents`` (the number of augmentable parents) up front to know its budget a·N.
    """
    excluded = set(exclude)
    n_used = made = empty = 0
    for index, parent, moves in iter_moves(parents, settings, n_parents, excluded):
        if index not in excluded:
            due = settings.strategy == "sequential" or copies_for(n_used, settings.a) > 0
            n_used += 1
            made += len(moves)
            empty += due and not moves
        derived = []
        forces = parent.forces.tolist() if moves else None
        for copy, move in enumerate(moves):
            energy, info, comments = describe(parent, index, move, settings, copy, forces)
            derived.append(displaced(parent, move, info, comments, energy))
        yield index, parent, derived
    asked = copies_total(n_used, settings.a)
    if made < asked:
        warnings.warn(shortfall_message(settings, asked, made, n_used, empty), stacklevel=3)


def augment(parents: Sequence[Structure], a: float, delta: float, strategy: str = "balanced", seed: int = 0,
            max_force: float | None = None, exclude: Iterable[int] = (), cap: float = 3.0) -> list[Structure]:
    """Derived structures of ``parents`` (nothing touches disk). Each has the Taylor energy, no force
    labels, and ``info`` linking it to its parent (``info["parent"]`` is the index in ``parents``).

    ``a = 0`` gives none (where ``AugmentSettings``, which the command line uses, refuses it): callers such as
    the trainer and experiment sweeps use it to mean "no augmentation".
    """
    if a == 0:  # no augmentation, as `pyita train --augment-a 0` or a = 0 in an experiment's sweep mean
        return []
    settings = AugmentSettings(a=a, delta=delta, strategy=strategy, seed=seed, max_force=max_force, cap=cap)
    excluded = set(exclude)
    n = sum(1 for k in range(len(parents)) if k not in excluded)
    return [d for _, _, derived in iter_augmented(parents, settings, n, excluded) for d in derived]
