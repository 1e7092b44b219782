"""The trainer: Jacobians, data preparation, splits, cache, losses, L-BFGS/Adam, checkpoints, bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from ase.build import bulk
import pytest
import torch

from pyita.augment import augment
from pyita.backends.embedded import train_and_evaluate
from pyita.train.fit import train
from pyita.descriptors import ChebyshevDescriptor, make_batch
from pyita.errors import InputError, PyitaError
from pyita.train import cache as cache_module
from pyita.train.cache import cached_features
from pyita.reference import fit_references
from pyita.train.data import (FeatureSet, evaluate, filter_max_energy, parent_groups,
                              split_by_parent, take)
from pyita.structure import Structure, geometry_key
from pyita.descriptors.jacobian import descriptor_jacobians
from pyita.train.losses import ForceLoss
from pyita.train.settings import TrainSettings
from test_model import small_potential
from trainer_data import SMALL_DESCRIPTOR, emt_molecule, emt_structures

FAST = dict(hidden="5:tanh,5:tanh", descriptor=SMALL_DESCRIPTOR, device="cpu")


def changed(settings: TrainSettings, **record) -> TrainSettings:
    """``settings`` with some record keys changed."""
    return TrainSettings.from_flat(**{**settings.as_dict(), **record})


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Keep the feature cache of these tests out of the user's ~/.cache."""
    monkeypatch.setenv("PYITA_CACHE", str(tmp_path / "cache"))


def rms(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def autograd_jacobian(descriptor, structure) -> torch.Tensor:
    batch = make_batch([structure], descriptor.species, descriptor.cutoff)
    n = len(structure)
    jac = torch.autograd.functional.jacobian(lambda p: descriptor(replace(batch, positions=p)), batch.positions,
                                             vectorize=True, strategy="forward-mode")
    return jac.reshape(n * descriptor.n_features, n * 3)


def dense_jacobians(jacobians, structures, n_features) -> list[torch.Tensor]:
    """The stored blocks laid out as one dense (N·F, N·3) Jacobian per structure (zeros where none stored)."""
    sizes = [len(s) for s in structures]
    start = np.cumsum([0] + sizes)
    owner = np.repeat(np.arange(len(structures)), sizes)
    dense = [torch.zeros(n, n_features, n, 3, dtype=torch.float64) for n in sizes]
    for rows, cols, blocks in jacobians.parts:
        for a, k, block in zip(rows.tolist(), cols.tolist(), blocks):
            m = owner[a]
            assert owner[k] == m, "a block links atoms of two structures"
            dense[m][a - start[m], :, k - start[m]] += block
    return [d.reshape(n * n_features, n * 3) for d, n in zip(dense, sizes)]


@pytest.mark.parametrize("species", [("Cu", "Au"), ("Cu",), ("C", "H", "O")])
def test_stored_jacobians_equal_autograd_through_the_descriptor(species):
    if species == ("Cu",):
        structures = [s.copy(symbols=["Cu"] * len(s)) for s in emt_structures(2, atoms_per_cell=8)]
    elif species == ("C", "H", "O"):
        structures = [emt_molecule()]
    else:
        structures = emt_structures(2) + emt_structures(1, atoms_per_cell=8)
    # Small cells (each atom sees many images of every other atom), also with TiO2-sized cutoffs.
    for settings, some in ((SMALL_DESCRIPTOR, structures), ({}, structures[-1:])):
        descriptor = ChebyshevDescriptor(species, **settings)
        jacobians = descriptor_jacobians(descriptor, some)
        assert jacobians.atoms.tolist() == list(range(sum(len(s) for s in some)))
        for got, structure in zip(dense_jacobians(jacobians, some, descriptor.n_features), some):
            expected = autograd_jacobian(descriptor, structure)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-10 * (1 + expected.abs().max()))


def large_triclinic_cell(repeat=(5, 5, 3), seed=3) -> Structure:
    """A rattled, sheared fcc cell of 4·Π(repeat) atoms (Cu with some Au), some atoms moved whole lattice
    vectors outside the cell."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
    atoms.set_cell(atoms.cell.array @ np.array([[1, 0.08, 0.03], [0, 1, -0.05], [0, 0, 1]]), scale_atoms=True)
    atoms.rattle(0.05, seed=seed)
    symbols = atoms.get_chemical_symbols()
    for k in rng.choice(len(atoms), len(atoms) // 7, replace=False):
        symbols[k] = "Au"
    outside = rng.choice(len(atoms), len(atoms) // 5, replace=False)
    positions = atoms.positions.copy()
    positions[outside] += rng.integers(-2, 3, (len(outside), 3)) @ atoms.cell.array
    return Structure(symbols, positions, atoms.cell.array, energy=0.0)


def test_jacobian_products_equal_autograd_on_cells_of_2_to_300_atoms():
    """Forces Jᵀv and the force loss's backward product J g through the stored blocks equal reverse- and
    forward-mode autograd through the descriptor, for a 2-atom cell and a triclinic 300-atom cell with atoms
    outside it; blocks grow linearly with the atoms (fixed density), not as N²."""
    two = Structure(["Cu", "Au"], [[0.1, 0.2, 0.0], [1.9, 1.7, 0.2]], 3.7 * np.eye(3), energy=0.0)
    big = large_triclinic_cell()
    assert len(big) == 300
    descriptor = ChebyshevDescriptor(("Cu", "Au"), radial_rc=6.0, radial_n=8, angular_rc=4.5, angular_n=3)
    structures = [two, big]
    jacobians = descriptor_jacobians(descriptor, structures)
    batch = make_batch(structures, descriptor.species, descriptor.cutoff)
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(len(batch.positions), descriptor.n_features, generator=generator, dtype=torch.float64)
    g = torch.randn(len(batch.positions), 3, generator=generator, dtype=torch.float64)
    positions = batch.positions.clone().requires_grad_(True)
    expected_forces, = torch.autograd.grad(-(descriptor(replace(batch, positions=positions)) * v).sum(), positions)
    _, expected_jg = torch.func.jvp(lambda p: descriptor(replace(batch, positions=p)), (batch.positions,), (g,))
    v_ = v.clone().requires_grad_(True)
    forces = jacobians.forces(v_)
    got_jg, = torch.autograd.grad(forces, v_, grad_outputs=-g)
    torch.testing.assert_close(forces, expected_forces, rtol=0, atol=1e-10 * float(expected_forces.abs().max()))
    torch.testing.assert_close(got_jg, expected_jg, rtol=0, atol=1e-10 * float(expected_jg.abs().max()))
    # Linear memory: the big cell stores N × (its neighbours + 1) blocks, far fewer than N².
    from pyita.descriptors.jacobian import block_count
    neighbours = torch.bincount(torch.cat([batch.pair_i, batch.pair_j]), minlength=len(batch.positions))
    assert block_count(big, descriptor) <= int(neighbours[2:].sum()) + len(big) < 0.5 * len(big) ** 2
    expected = block_count(two, descriptor) + block_count(big, descriptor)
    assert sum(len(rows) for rows, _, _ in jacobians.parts) == expected


def test_forces_through_jacobians_equal_potential_forces_and_force_loss_gradient_is_right():
    potential = small_potential()
    structures = emt_structures(3) + emt_structures(2, seed=5, atoms_per_cell=8)
    descriptor = potential.descriptor
    features = [descriptor(make_batch([s], potential.species, descriptor.cutoff)).detach() for s in structures]
    data = FeatureSet.build(structures, features, potential, jacobians=descriptor_jacobians(descriptor, structures))
    outputs = evaluate(potential, data, forces=True)
    batch = make_batch(structures, potential.species, descriptor.cutoff)
    energies, forces, _ = potential.energy_and_derivatives(batch)
    torch.testing.assert_close(outputs.energies, energies, rtol=0, atol=1e-10)
    torch.testing.assert_close(outputs.forces, forces[data.jacobians.atoms], rtol=0, atol=1e-10)
    # The force loss must be differentiable in the weights through the stored Jacobians.
    loss_term = ForceLoss(scale=0.7, weight=2.0)
    weight = potential.networks.nets[0][0].weight
    loss = loss_term(evaluate(potential, data, forces=True, create_graph=True), data)
    grad, = torch.autograd.grad(loss, weight)
    h = 1e-6
    for index in [(0, 0), (2, 5), (4, 11)]:
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                weight[index] += sign * h
            values.append(float(loss_term(evaluate(potential, data, forces=True), data)))
            with torch.no_grad():
                weight[index] -= sign * h
        assert grad[index].item() == pytest.approx((values[0] - values[1]) / (2 * h), rel=1e-5, abs=1e-9)


def test_reference_energies_are_recovered_by_least_squares():
    structures = emt_structures(6) + emt_structures(4, seed=2, atoms_per_cell=8)
    for s in structures:
        counts = {"Cu": s.symbols.count("Cu"), "Au": s.symbols.count("Au")}
        s.energy = -3.0 * counts["Cu"] - 5.0 * counts["Au"] + 1e-3 * len(s)
    fitted = fit_references(structures, ("Cu", "Au"))[0]
    assert fitted["Cu"] == pytest.approx(-3.0 + 1e-3, abs=1e-9)
    assert fitted["Au"] == pytest.approx(-5.0 + 1e-3, abs=1e-9)


def family(n_parents=10, a=3):
    parents = emt_structures(n_parents)
    return parents, parents + augment(parents, a=a, delta=0.02, seed=1)


def test_split_by_parent_keeps_derived_structures_with_their_parent():
    parents, structures = family()
    groups = parent_groups(structures)
    train_idx, val_idx, test_idx = split_by_parent(structures, 0.2, 0.1, seed=4)
    assert len(test_idx) == 2 and len(val_idx) == 1
    held = set(test_idx) | set(val_idx)
    assert all(k < len(parents) for k in held)  # only originals are held out
    assert not held & {int(groups[k]) for k in train_idx}  # no derived copy of a held-out parent trains
    assert len(train_idx) == 7 * 4  # 7 training parents with 3 derived each
    assert split_by_parent(structures, 0.2, 0.1, seed=4) == (train_idx, val_idx, test_idx)
    assert split_by_parent(structures, 0.2, 0.1, seed=5) != (train_idx, val_idx, test_idx)
    with pytest.raises(PyitaError, match="cannot be split"):
        split_by_parent(structures[:1], 0.5)


def test_take_renumbers_parent_links():
    parents, structures = family(4, a=1)
    kept = take(structures, [1, 3, 5, 7])  # parents 1 and 3 and their derived copies
    assert [s.info.get("parent") for s in kept] == [None, None, 0, 1]
    assert parent_groups(kept).tolist() == [0, 1, 0, 1]


def test_max_energy_filter_drops_high_energy_parents_and_their_children():
    parents, structures = family(4, a=2)
    references = {"Cu": 0.0, "Au": 0.0}
    per_atom = [p.energy / len(p) for p in parents]
    limit = sorted(per_atom)[-1] - 1e-9  # drops exactly the highest parent
    worst = int(np.argmax(per_atom))
    kept = filter_max_energy(structures, references, limit)
    groups = parent_groups(structures)
    assert sorted(set(groups[kept].tolist())) == sorted(set(range(4)) - {worst})
    assert len(kept) == 3 * 3


def test_feature_cache_reuses_features_from_disk(tmp_path, monkeypatch):
    descriptor = ChebyshevDescriptor(("Cu", "Au"), **SMALL_DESCRIPTOR)
    structures = emt_structures(4)
    first = cached_features(descriptor, structures[:3], cache_dir=tmp_path)
    calls = []
    real = cache_module.featurize
    monkeypatch.setattr(cache_module, "featurize", lambda d, s, **kw: calls.append(len(s)) or real(d, s, **kw))
    again = cached_features(descriptor, structures, cache_dir=tmp_path)
    assert calls == [1]  # only the new structure was featurized
    for a, b in zip(first, again):
        assert torch.equal(a, b)
    calls.clear()
    cached_features(descriptor, structures[::-1], cache_dir=tmp_path)
    assert calls == []
    other = ChebyshevDescriptor(("Cu", "Au"), **{**SMALL_DESCRIPTOR, "radial_n": 4})
    assert cached_features(other, structures[:1], cache_dir=tmp_path)[0].shape[1] == other.n_features
    assert calls == [1]  # different settings never share features


def test_only_original_structures_enter_the_feature_cache(tmp_path):
    parents, structures = family(5, a=2)
    train(structures, settings=TrainSettings.from_flat(iterations=1, **FAST), cache_dir=tmp_path)
    keys = [k for shard in tmp_path.rglob("*.pt") for k in torch.load(shard, weights_only=True)["keys"]]
    assert sorted(keys) == sorted(geometry_key(p) for p in parents)


@pytest.mark.parametrize("how", ["range", "std"])
def test_energy_normalization_by_hand(how):
    """"range" (aenet's ts_energy_norm_simple): the network's 0 sits at the midpoint of the training set's
    per-atom cohesive energies and ±1 at their ends; "std": at their mean, ±1 one standard deviation away."""
    structures = emt_structures(6)
    refs = fit_references(structures, ["Cu", "Au"])[0]
    cohesive = np.array([(s.energy - sum(refs[x] for x in s.symbols)) / len(s) for s in structures])
    result = train(structures, settings=TrainSettings.from_flat(iterations=1, energy_normalization=how, **FAST),
                   reference_energies=refs)
    shift, scale = float(result.potential.energy_shift), float(result.potential.energy_scale)
    if how == "range":
        assert shift == pytest.approx((cohesive.max() + cohesive.min()) / 2, abs=1e-12)
        assert scale == pytest.approx((cohesive.max() - cohesive.min()) / 2, abs=1e-12)
    else:
        assert shift == pytest.approx(cohesive.mean(), abs=1e-12)
        assert scale == pytest.approx(cohesive.std(), abs=1e-12)
    with pytest.raises(PyitaError, match="energy_normalization must be one of range, std"):
        TrainSettings.from_flat(energy_normalization="minmax")


def test_lbfgs_keeps_improving_and_is_seeded():
    structures = emt_structures(30)
    settings = TrainSettings.from_flat(iterations=25, seed=2, **FAST)
    result = train(structures[:24], test=structures[24:], settings=settings, use_cache=False)
    rmse = [row["train_rmse"] for row in result.history]
    assert rmse[-1] < 0.2 * rmse[0]
    assert rmse[-1] < rmse[9]  # no stall after a few iterations
    again = train(structures[:24], test=structures[24:], settings=settings, use_cache=False)
    assert again.history[-1]["train_rmse"] == rmse[-1]
    other = train(structures[:24], settings=replace(settings, seed=3), use_cache=False)
    assert other.history[-1]["train_rmse"] != rmse[-1]


def test_direct_force_training_lowers_force_errors():
    structures = emt_structures(24)
    base = dict(iterations=60, seed=1, **FAST)
    energy_only = train_and_evaluate(structures[:18], [], structures[18:], base)
    with_forces = train_and_evaluate(structures[:18], [], structures[18:], {**base, "force_weight": 1.0})
    assert rms(with_forces.force_errors) < 0.7 * rms(energy_only.force_errors)
    assert "train_force_rmse" in with_forces.history[-1]


def test_force_fraction_uses_a_seeded_share_of_the_structures():
    """Only the chosen share has Jacobians (and so enters the force term), the same share for the same seed,
    another for another seed; the term's scale is the RMS force of exactly that share."""
    from pyita.train.fit import _force_training

    structures = emt_structures(20)
    descriptor = ChebyshevDescriptor(["Cu", "Au"], **SMALL_DESCRIPTOR)
    chosen = {}
    for seed in (0, 0, 1):
        settings = TrainSettings.from_flat(force_weight=1.0, force_fraction=0.25, seed=seed, **FAST)
        loss, jac = _force_training(descriptor, structures, [], settings, "cpu")
        members = jac["train"].structures.tolist()
        chosen.setdefault(seed, []).append(members)
        reference = np.concatenate([structures[k].forces.ravel() for k in members])
        assert len(members) == 5 and loss.scale == pytest.approx(np.sqrt(np.mean(reference ** 2)), rel=1e-12)
    assert chosen[0][0] == chosen[0][1] != chosen[1][0]
    _, everything = _force_training(descriptor, structures, [], TrainSettings.from_flat(force_weight=1.0, **FAST),
                                    "cpu")
    assert everything["train"].structures.tolist() == list(range(20))
    result = train(structures, settings=TrainSettings.from_flat(iterations=2, force_weight=1.0, force_fraction=0.25,
                                                                **FAST),
                   use_cache=False)
    assert "train_force_rmse" in result.history[-1]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(PyitaError, match=r"force fraction must be in \(0, 1\]"):
            TrainSettings.from_flat(force_weight=1.0, force_fraction=bad)
    with pytest.raises(PyitaError, match="force_fraction_of must be structures or atoms, got 'pairs'"):
        TrainSettings.from_flat(force_weight=1.0, force_fraction=0.5, force_fraction_of="pairs")


def test_force_fraction_of_atoms_keeps_only_their_columns():
    """With a fraction of atoms, every structure keeps a seeded share of its atoms (at least one); their forces,
    and the force-loss gradient, are those of the full Jacobians at exactly those atoms, from a fraction of the
    blocks; the term's scale is the RMS force of those atoms."""
    from pyita.train.fit import _force_training
    from pyita.descriptors.jacobian import StreamedJacobians

    structures = emt_structures(6)
    descriptor = ChebyshevDescriptor(["Cu", "Au"], **SMALL_DESCRIPTOR)
    settings = TrainSettings.from_flat(force_weight=1.0, force_fraction=0.3, force_fraction_of="atoms", seed=3, **FAST)
    loss, jac = _force_training(descriptor, structures, [], settings, "cpu")
    _, full = _force_training(descriptor, structures, [], changed(settings, force_fraction=1.0), "cpu")
    part, full = jac["train"], full["train"]
    assert part.structures.tolist() == list(range(6))
    starts = np.cumsum([0] + [len(s) for s in structures])
    per_structure = np.histogram(part.atoms.numpy(), bins=starts)[0]
    assert per_structure.tolist() == [max(1, round(0.3 * len(s))) for s in structures]
    again = _force_training(descriptor, structures, [], settings, "cpu")[1]["train"]
    other = _force_training(descriptor, structures, [], replace(settings, seed=4), "cpu")[1]["train"]
    assert torch.equal(again.atoms, part.atoms) and not torch.equal(other.atoms, part.atoms)
    blocks = sum(len(b) for _, _, b in part.parts)
    assert blocks < 0.5 * sum(len(b) for _, _, b in full.parts)
    reference = np.concatenate([s.forces for s in structures])[part.atoms.numpy()]
    assert loss.scale == pytest.approx(np.sqrt(np.mean(reference ** 2)), rel=1e-12)
    v = torch.randn(int(starts[-1]), descriptor.n_features, dtype=torch.float64, requires_grad=True)
    where = torch.searchsorted(full.atoms, part.atoms)
    forces = part.forces(v)
    torch.testing.assert_close(forces, full.forces(v)[where], rtol=1e-13, atol=1e-13)
    weights = torch.randn_like(forces)
    (grad_part,) = torch.autograd.grad((forces * weights).sum(), v)
    (grad_full,) = torch.autograd.grad((full.forces(v)[where] * weights).sum(), v)
    torch.testing.assert_close(grad_part, grad_full, rtol=1e-12, atol=1e-12)
    owner = np.searchsorted(starts, part.atoms.numpy(), side="right") - 1   # streamed: the same atoms and forces
    columns = {k: part.atoms.numpy()[owner == k] - starts[k] for k in range(6)}
    streamed = StreamedJacobians(descriptor, structures, range(6), columns=columns)
    assert torch.equal(streamed.atoms, part.atoms)
    torch.testing.assert_close(streamed.forces(v.detach()), forces.detach(), rtol=1e-13, atol=1e-13)
    result = train(structures, settings=changed(settings, iterations=2), use_cache=False)
    assert result.potential.metadata["settings"]["force_fraction_of"] == "atoms"


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, method):
    structures = emt_structures(12)
    settings = TrainSettings.from_flat(iterations=6, method=method, batch_size=4, learning_rate=0.01, seed=5,
                             checkpoint_every=0, force_weight=0.5, **FAST)
    straight = train(structures, settings=settings, use_cache=False)
    ckpt = tmp_path / "run.ckpt"
    train(structures, settings=changed(settings, iterations=3), checkpoint=ckpt, use_cache=False)
    resumed = train(structures, settings=settings, checkpoint=ckpt, resume=True, use_cache=False)
    assert [r["epoch"] for r in resumed.history] == list(range(1, 7))
    seconds = [r["seconds"] for r in resumed.history]
    assert seconds == sorted(seconds)  # training time adds up across the interruption
    for a, b in zip(straight.potential.state_dict().values(), resumed.potential.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with pytest.raises(PyitaError, match="different training data"):
        train(structures[:-1], settings=settings, checkpoint=ckpt, resume=True, use_cache=False)
    with pytest.raises(PyitaError, match=r"settings differ \(hidden\)"):
        train(structures, settings=changed(settings, hidden="4:tanh"), checkpoint=ckpt, resume=True,
              use_cache=False)
    # a checkpoint from before a setting existed: the setting counts as its default there
    saved = torch.load(ckpt, weights_only=True)
    del saved["settings"]["force_fraction_of"]
    torch.save(saved, ckpt)
    again = train(structures, settings=settings, checkpoint=ckpt, resume=True, use_cache=False)
    assert [r["epoch"] for r in again.history] == list(range(1, 7))
    with pytest.raises(PyitaError, match=r"settings differ \(force_fraction_of\)"):
        train(structures, settings=changed(settings, force_fraction_of="atoms"), checkpoint=ckpt, resume=True,
              use_cache=False)


def test_early_stopping_restores_the_best_validation_epoch():
    structures = emt_structures(16)
    settings = TrainSettings.from_flat(iterations=200, patience=3, method="adam", learning_rate=0.05, batch_size=2,
                                       **FAST)
    result = train(structures[:8], structures[8:], settings, use_cache=False)
    losses = [row["val_loss"] for row in result.history]
    best = int(np.argmin(losses))
    assert len(losses) == best + 1 + 3  # stopped 3 epochs after the best
    assert result.potential.metadata["best_epoch"] == best + 1
    data_val = structures[8:]  # the restored weights reproduce the best epoch's validation error
    batch = make_batch(data_val, result.potential.species, result.potential.descriptor.cutoff)
    with torch.no_grad():
        errors = (result.potential(batch).numpy() - [s.energy for s in data_val]) / [len(s) for s in data_val]
    assert rms(errors) * 1000 == pytest.approx(result.history[best]["val_rmse"], rel=1e-9)


def test_derived_structures_get_their_weight_and_parent_links():
    parents, structures = family(6, a=2)
    settings = TrainSettings.from_flat(iterations=2, derived_weight=0.25, **FAST)
    potential = train(structures, settings=settings, use_cache=False).potential
    features = [torch.zeros(len(s), potential.descriptor.n_features) for s in structures]
    data = FeatureSet.build(structures, features, potential, [0.25 if "parent" in s.info else 1 for s in structures])
    assert data.parent.tolist() == [-1] * 6 + [d.info["parent"] for d in structures[6:]]
    assert data.weight.tolist() == [1.0] * 6 + [0.25] * 12


def test_on_the_fly_augmentation_draws_fresh_structures_each_epoch(monkeypatch):
    import pyita.train.fit as fit

    drawn = []
    real = fit._derive
    monkeypatch.setattr(fit, "_derive", lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1])
    structures = emt_structures(8)
    settings = TrainSettings.from_flat(iterations=3, augment_a=2, on_the_fly=True, method="adam", **FAST)
    result = train(structures, settings=settings, use_cache=False)
    assert len(result.history) == 3
    epochs = drawn[1:]  # the first draw only checks the settings
    assert len(epochs) == 3 and all(len(d) == 16 for d in epochs)
    energies = [[d.energy for d in draw] for draw in epochs]
    assert energies[0] != energies[1] != energies[2]


def test_experiment_entry_point_holds_out_validation_parents_with_their_children(monkeypatch):
    import pyita.backends.embedded as embedded

    parents, test = emt_structures(10), emt_structures(3, seed=9)
    derived = augment(parents, a=2, delta=0.02, seed=1)
    seen = {}
    real = embedded.train
    monkeypatch.setattr(embedded, "train", lambda tr, val, *a, **k: seen.update(train=tr, val=val) or
                        real(tr, val, *a, **k))
    result = train_and_evaluate(parents, derived, test, {"iterations": 3, "early_stopping": 2, **FAST},
                                {"strategy": "balanced", "a": 2, "delta": 0.02, "weight": 0.5}, seed=3)
    held = {s.source for s in seen["val"]}
    assert len(held) == 1 and len(seen["train"]) == 9 * 3
    assert not held & {s.info["parent_source"] for s in seen["train"] if "parent" in s.info}
    assert result.potential.metadata["settings"]["derived_weight"] == 0.5
    assert result.energy_pred.shape == result.energy_ref.shape == (3,)
    assert result.force_errors.shape == (3 * 4 * 3,)
    with pytest.raises(PyitaError, match="not supported"):
        train_and_evaluate(parents, [], test, {"iterations": 1, **FAST}, {"colour": "red"})


def test_bad_training_data_is_refused_clearly():
    structures = emt_structures(3)
    settings = TrainSettings.from_flat(iterations=1, **FAST)
    with pytest.raises(PyitaError, match="training data is empty"):
        train([], settings=settings, use_cache=False)
    with pytest.raises(PyitaError, match="at least 2 original structures"):
        train(structures[:1], settings=settings, use_cache=False)
    broken = structures[1].copy(energy=float("nan"))
    with pytest.raises(InputError, match="not finite"):
        train([structures[0], broken], settings=settings, use_cache=False)
    forces = structures[1].forces.copy()
    forces[0, 0] = np.nan
    with pytest.raises(InputError, match="forces contain NaN"):
        train([structures[0], structures[1].copy(forces=forces)], settings=settings, use_cache=False)
    for bad in (dict(method="sgd"), dict(iterations=0), dict(hidden="3:relu"), dict(on_the_fly=True)):
        with pytest.raises(PyitaError):
            TrainSettings.from_flat(**bad)


def test_settings_record_is_flat_and_reads_back_and_making_settings_reads_no_file(tmp_path):
    """The model file's flat record (``as_dict``) gives the same settings back; the augmentation draws with the
    training seed; initial networks are read where training starts, not when the settings are made."""
    settings = TrainSettings.from_flat(iterations=3, augment_a=2, augment_delta=0.02, on_the_fly=True, seed=4, **FAST)
    record = settings.as_dict()
    assert list(record) == list(TrainSettings.record_types()) and record["augment_delta"] == 0.02
    assert TrainSettings.from_flat(**record) == settings and settings.augment.seed == 4
    assert TrainSettings().augment is None and TrainSettings().as_dict()["augment_a"] == 0.0
    later = TrainSettings.from_flat(initial_networks=tmp_path / "written-later.pt")
    assert later.model.initial_networks == str(tmp_path / "written-later.pt") and later.model.hidden is None
    with pytest.raises(PyitaError, match="unknown trainer settings"):
        TrainSettings.from_flat(hiden="3:tanh")


def test_time_budget_stops_after_the_epoch_that_reaches_it():
    structures = emt_structures(10)
    settings = TrainSettings.from_flat(iterations=50, max_minutes=1e-9, **FAST)
    result = train(structures, settings=settings, use_cache=False)
    assert len(result.history) == 1 and result.potential.metadata["settings"]["max_minutes"] == 1e-9
    assert len(train(structures, settings=changed(settings, max_minutes=None, iterations=3),
                     use_cache=False).history) == 3
    for bad in (0.0, -1.0):
        with pytest.raises(PyitaError, match="time budget must be > 0 minutes"):
            TrainSettings.from_flat(max_minutes=bad)


def test_jacobians_too_large_to_store_are_computed_per_mini_batch():
    """When the stored Jacobians would not fit in the memory available (here: a --max-memory cap 0.3 GiB above what
    the process holds, less than the safety margin), Adam computes them per mini-batch: the same training, number
    for number. The decision and its refusals are tested in test_memory.py, streamed L-BFGS there too."""
    from pyita.train import fit
    from pyita.descriptors.jacobian import StreamedJacobians
    from pyita.memory import GIB, resident_memory

    structures = emt_structures(16)
    settings = TrainSettings.from_flat(method="adam", iterations=3, batch_size=4, force_weight=1.0, seed=2, **FAST)
    still = changed(settings, learning_rate=1e-12)   # steps too small to move the weights
    stored = [train(structures[:12], structures[12:], run, use_cache=False).history for run in (settings, still)]
    cap = (resident_memory() + 0.3 * GIB) / GIB
    with pytest.warns(UserWarning, match="computed per mini-batch instead"):
        streamed = [train(structures[:12], structures[12:], changed(run, max_memory=cap), use_cache=False).history
                    for run in (settings, still)]
    for column in ("val_loss", "val_force_rmse"):
        assert [row[column] for row in streamed[0]] == [row[column] for row in stored[0]]
    # streamed, the training columns are the mini-batches' own outputs put together (no second pass over the
    # Jacobians); when the steps do not move the weights they equal the end-of-epoch evaluation
    for column in ("loss", "train_mae", "train_rmse", "train_force_rmse"):
        assert [row[column] for row in streamed[1]] == pytest.approx([row[column] for row in stored[1]], rel=1e-8)
    descriptor = ChebyshevDescriptor(["Cu", "Au"], **SMALL_DESCRIPTOR)
    with pytest.warns(UserWarning, match="computed per mini-batch instead"):
        _, jac = fit._force_training(descriptor, structures, [], changed(settings, max_memory=cap), "cpu")
    assert isinstance(jac["train"], StreamedJacobians)


# ------------------------------------------------------------------------------- reference energies

def _generate_in_for_sample_tio2(folder, types: dict[str, float]):
    from pathlib import Path

    from pyita.io.generate_in import GenerateIn, write_generate_in

    xsf = sorted((Path(__file__).resolve().parent / "data" / "aenet" / "xsf").glob("*.xsf"))
    write_generate_in(folder / "generate.in", GenerateIn(types=types, setups={"Ti": "Ti.stp", "O": "O.stp"},
                                                         files=[str(p) for p in xsf]))
    return folder / "generate.in"


def test_train_on_placeholder_types_fits_the_references_as_every_command_does(tmp_path):
    """Before issue 23 `pyita train` took the all-zero TYPES `pyita augment` writes as they are (reference
    energies 0, so MAXENERGY and per-atom energies meant raw totals); now they count as missing and are fitted
    as `pyita aenet prepare` fits them. Real TYPES are kept."""
    from pyita.io import read_structures
    from pyita.model.potential import Potential
    from pyita.reference import resolve_references
    from pyita.train.run import run_train

    settings = TrainSettings.from_flat(iterations=1, **FAST)
    placeholder = _generate_in_for_sample_tio2(tmp_path, {"Ti": 0.0, "O": 0.0})
    run_train(str(placeholder), tmp_path / "fitted.pt", settings, test_fraction=0.2, progress=False)
    model = Potential.load(tmp_path / "fitted.pt")
    originals = list(read_structures(str(placeholder)))
    fitted = fit_references(originals, ["Ti", "O"])[0]
    assert model.reference_energies() == pytest.approx(fitted, abs=1e-9)
    assert all(abs(e) > 100 for e in model.reference_energies().values())   # not the placeholders' zeros
    assert model.metadata["reference_energies_origin"] == {"Ti": "fitted", "O": "fitted"}
    assert resolve_references(originals, ["Ti", "O"], from_input={"Ti": 0.0, "O": 0.0},
                              warn=False).energies == fitted   # the rule `aenet prepare` uses

    real = {"Ti": -1626.66972707, "O": -433.23448532}
    (tmp_path / "real").mkdir()
    run_train(str(_generate_in_for_sample_tio2(tmp_path / "real", real)), tmp_path / "real.pt", settings,
              test_fraction=0.2, progress=False)
    model = Potential.load(tmp_path / "real.pt")
    assert model.reference_energies() == pytest.approx(real, abs=1e-9)
    assert model.metadata["reference_energies_origin"] == {"Ti": "generate.in", "O": "generate.in"}


def test_missing_reference_energies_are_fitted_with_the_given_ones_held_fixed():
    """One rule for every command: `train` used to refuse a partial set ("give all or none")."""
    structures = emt_structures(6) + emt_structures(4, seed=2, atoms_per_cell=8)
    result = train(structures, settings=TrainSettings.from_flat(iterations=1, **FAST), reference_energies={"Cu": 0.0},
                   use_cache=False)
    refs = result.potential.reference_energies()
    assert refs["Cu"] == 0.0
    assert refs["Au"] == pytest.approx(fit_references(structures, ["Cu", "Au"], fixed={"Cu": 0.0})[0]["Au"])
