"""The parent–child Taylor loss (issue 7): exact values, gradient, and that it teaches forces."""

import numpy as np
import pytest
import torch

from pyita.augment import augment
from pyita.descriptors import ChebyshevDescriptor, featurize
from pyita.model.potential import Potential
from pyita.sample import load_sample
from pyita.train.data import FeatureSet, Outputs, evaluate, fit_normalization
from pyita.train.losses import ParentChildLoss

SMALL = {"radial_rc": 4.0, "radial_n": 4, "angular_rc": 3.5, "angular_n": 2}


@pytest.fixture(scope="module")
def family():
    parents = load_sample("tio2-md")[:3]
    derived = augment(parents, a=2, delta=0.02, seed=4)
    structures = parents + derived
    descriptor = ChebyshevDescriptor(["Ti", "O"], **SMALL)
    potential = Potential(descriptor, "4:tanh", {"Ti": -1600.0, "O": -430.0}, seed=0)
    features = featurize(descriptor, structures)
    fit_normalization(potential, structures, features)
    return structures, FeatureSet.build(structures, features, potential), potential


def test_pairs_link_children_to_their_parents(family):
    structures, data, _ = family
    child, parent = ParentChildLoss.pairs(data)
    assert child.tolist() == list(range(3, 9))
    assert parent.tolist() == [d.info["parent"] for d in structures[3:]]


def test_zero_for_a_model_whose_differences_are_exactly_linear(family):
    structures, data, _ = family
    # a model that is exactly linear along each displacement with the true forces: E(R+D) = E(R) − F·D
    parent_energy = torch.tensor([-5.0, 3.0, 1.5], dtype=torch.float64)
    children = [parent_energy[d.info["parent"]] + d.info["taylor_shift"] for d in structures[3:]]
    energies = torch.cat([parent_energy, torch.stack(children)])
    loss = ParentChildLoss(scale=1e-3, weight=1.0)
    assert float(loss(Outputs(energies), data)) == pytest.approx(0.0, abs=1e-20)
    # move one child's energy by 4 meV: the loss is ((4 meV / N) / scale)² averaged over the 6 pairs
    energies[5] += 0.004
    n = len(structures[5])
    assert float(loss(Outputs(energies), data)) == pytest.approx(((0.004 / n) / 1e-3) ** 2 / 6, rel=1e-12)


def test_scale_is_the_rms_taylor_shift_per_atom(family):
    structures, data, _ = family
    loss = ParentChildLoss.for_data(data, weight=2.0)
    shifts = np.array([d.info["taylor_shift"] / len(d) for d in structures[3:]])
    assert loss.scale == pytest.approx(np.sqrt(np.mean(shifts**2)), rel=1e-10)
    assert loss.weight == 2.0


def test_gradient_matches_finite_differences(family):
    _, data, potential = family
    loss = ParentChildLoss.for_data(data, weight=1.0)
    weight = next(potential.networks.parameters())

    def value():
        return loss(evaluate(potential, data), data)

    potential.zero_grad()
    value().backward()
    analytic = weight.grad[0, :3].clone()
    h = 1e-4   # the loss is smooth; a smaller step drowns in the rounding of total energies (~1e5 eV)
    numeric = []
    with torch.no_grad():
        for k in range(3):
            weight[0, k] += h
            up = float(value())
            weight[0, k] -= 2 * h
            down = float(value())
            weight[0, k] += h
            numeric.append((up - down) / (2 * h))
    assert analytic.numpy() == pytest.approx(np.array(numeric), rel=1e-3)


@pytest.mark.slow
def test_parent_child_training_lowers_the_force_error():
    """On GFN1-xTB MD snapshots (exact forces), energies alone leave forces poorly determined; the
    parent–child term on many one-atom displacements teaches force projections and lowers the test force
    error relative to energy-only training from the same initial weights."""
    from pyita.backends.embedded import train_and_evaluate

    sample = load_sample("tio2-md")
    order = np.random.default_rng(0).permutation(len(sample))
    train, test = [sample[i] for i in order[:40]], [sample[i] for i in order[110:]]
    settings = {"iterations": 150, "descriptor": SMALL | {"radial_rc": 6.0, "radial_n": 8}}
    base = train_and_evaluate(train, [], test, settings, None, seed=3)
    derived = augment(train, a=24, delta=0.03, seed=1)
    pc = train_and_evaluate(train, derived, test, settings,
                            {"a": 24, "delta": 0.03, "weight": 0.0, "parent_child_weight": 10.0}, seed=3)
    base_force = np.abs(base.force_errors).mean()
    pc_force = np.abs(pc.force_errors).mean()
    assert pc_force < 0.97 * base_force, (pc_force, base_force)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 7])
def test_mini_batches_keep_every_parent_with_its_children(family, batch_size):
    """Adam's batches hold whole parent groups, so the parent–child loss over the batches, each weighted by
    its share of the pairs, is the full-batch loss; every structure is in exactly one batch."""
    _, data, potential = family
    loss = ParentChildLoss.for_data(data, weight=1.0)
    full = float(loss(evaluate(potential, data), data))
    n_pairs = len(ParentChildLoss.pairs(data)[0])
    for seed in range(5):
        batches = data.batches(batch_size, torch.Generator().manual_seed(seed))
        assert sorted(torch.cat(batches).tolist()) == list(range(len(data)))
        total, pairs = 0.0, 0
        for indices in batches:
            batch = data.subset(indices)
            n = len(ParentChildLoss.pairs(batch)[0])
            pairs += n
            total += n * float(loss(evaluate(potential, batch), batch))
            assert len(indices) <= max(batch_size, 3)   # a group of 3 (parent + 2 children) may stand alone
        assert pairs == n_pairs
        assert total / n_pairs == pytest.approx(full, rel=1e-12)


def test_without_derived_structures_batches_are_a_plain_shuffle(family):
    structures, _, potential = family
    originals = structures[:3]
    data = FeatureSet.build(originals, featurize(potential.descriptor, originals), potential)
    batches = data.batches(2, torch.Generator().manual_seed(11))
    assert [b.tolist() for b in batches] == [t.tolist() for t in torch.randperm(3, generator=torch.Generator()
                                                                                 .manual_seed(11)).split(2)]
