"""The Chebyshev descriptor against independent numpy evaluations of aenet's definition.

The reference below enumerates neighbours (with explicit periodic images) and j < k triplets directly and
uses T_n(x) = cos(n arccos x); the module sums pairs with the addition theorem and recurrences, so
agreement checks the rewrite as well as the neighbour list.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from pyita.descriptors import ChebyshevDescriptor, featurize, make_batch, typespin
from pyita.errors import InputError
from pyita.structure import Structure


def cheb(x, order):
    return np.cos(np.arange(order + 1) * np.arccos(np.clip(np.asarray(x)[..., None], -1.0, 1.0)))


def fc(r, rc):
    return 0.5 * (math.cos(math.pi * r / rc) + 1.0) if r < rc else 0.0


def reference(structure, spin, rr=8.0, rn=16, ar=6.5, an=4):
    """Direct evaluation: every neighbour image, every unordered triplet (spin: symbol -> typespin)."""
    pos, cell = structure.positions, structure.cell
    images = [np.zeros(3)]
    if cell is not None:
        frac = pos @ np.linalg.inv(cell)
        heights = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
        reach = np.ceil(max(rr, ar) / heights + np.ptp(frac, axis=0)).astype(int) + 1
        images = [np.array(n) @ cell for n in itertools.product(*(range(-k, k + 1) for k in reach))]
    images = np.array(images)
    rows = []
    for a in range(len(pos)):
        vec = (pos[None, :, :] + images[:, None, :] - pos[a]).reshape(-1, 3)
        s = np.tile([spin[x] for x in structure.symbols], len(images))
        d = np.linalg.norm(vec, axis=1)
        radial = np.zeros((2, rn + 1))
        for dist, sj in zip(d, s):
            if 1e-9 < dist <= rr:
                g = fc(dist, rr) * cheb(2 * dist / rr - 1, rn)
                radial += [g, sj * g]
        keep = (d > 1e-9) & (d <= ar)
        unit, w, sk = vec[keep] / d[keep, None], np.array([fc(x, ar) for x in d[keep]]), s[keep]
        j, k = np.triu_indices(len(w), 1)
        terms = (w[j] * w[k])[:, None] * cheb((unit[j] * unit[k]).sum(1), an)
        angular = np.array([terms.sum(0), ((sk[j] * sk[k])[:, None] * terms).sum(0)])
        multi = len(set(spin.values())) > 1
        parts = [radial[0], angular[0], radial[1], angular[1]] if multi else [radial[0], angular[0]]
        rows.append(np.concatenate(parts))
    return np.array(rows)


def features(descriptor, structure, positions=None):
    batch = make_batch([structure], descriptor.species, descriptor.cutoff)
    if positions is not None:
        batch.positions = positions
    return descriptor(batch)


TRICLINIC = np.array([[3.1, 0.2, 0.0], [0.7, 2.9, 0.1], [0.3, -0.6, 3.3]])


def random_cell_structure(seed=0, symbols=("Ti", "O", "O", "Ti", "O")):
    rng = np.random.default_rng(seed)
    frac = rng.random((len(symbols), 3))
    frac[0] = [-0.0, 0.5, 1.0]   # on the faces, signed zero
    frac[1, 0] = 1.3              # outside the cell
    return Structure(list(symbols), frac @ TRICLINIC, TRICLINIC.copy(), source="random.xsf")


def test_typespin_follows_aenet():
    assert typespin(2) == [-1.0, 1.0]
    assert typespin(3) == [-1.0, 0.0, 1.0]
    assert typespin(4) == [-2.0, -1.0, 1.0, 2.0]
    assert typespin(5) == [-2.0, -1.0, 0.0, 1.0, 2.0]


def test_feature_count_and_settings_round_trip():
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=8.0, radial_n=16, angular_rc=6.5, angular_n=4)
    assert d.n_features == 44 and d.cutoff == 8.0
    assert ChebyshevDescriptor(["Ti"]).n_features == 22
    rebuilt = ChebyshevDescriptor(**json.loads(json.dumps(d.settings())))
    s = random_cell_structure()
    assert torch.equal(features(d, s), features(rebuilt, s))
    assert features(d, s).shape == (5, 44) and features(d, s).dtype == torch.float64


def test_two_atoms_by_hand():
    d = 2.0
    s = Structure(["Ti", "O"], [[0.0, 0.0, 0.0], [0.0, 0.0, d]])
    out = features(ChebyshevDescriptor(["Ti", "O"]), s).numpy()
    # r = 2 Å, Rc = 8 Å: x = 2r/Rc - 1 = -0.5, f_c = (cos(pi/4) + 1)/2; T_0..T_3(-0.5) = 1, -0.5, -0.5, 1.
    f = (math.sqrt(0.5) + 1) / 2
    assert out[0, :4] == pytest.approx([f, -0.5 * f, -0.5 * f, f], abs=1e-14)
    radial = f * np.cos(np.arange(17) * np.arccos(-0.5))
    np.testing.assert_allclose(out[0], np.concatenate([radial, np.zeros(5), radial, np.zeros(5)]), atol=1e-13)
    # Ti is first in the species list (typespin -1), so O sees a Ti neighbour weighted by -1.
    np.testing.assert_allclose(out[1], np.concatenate([radial, np.zeros(5), -radial, np.zeros(5)]), atol=1e-13)


def test_three_atoms_by_hand():
    """O-Ti-O with the O-O distance beyond the angular but within the radial cutoff."""
    rr, ar = 4.0, 2.5
    pos = np.array([[0.0, 0.0, 0.0], [1.8, 0.0, 0.0], [-0.6, 1.9, 0.4]])
    s = Structure(["Ti", "O", "O"], pos)
    out = features(ChebyshevDescriptor(["Ti", "O"], radial_rc=rr, radial_n=5, angular_rc=ar, angular_n=3), s).numpy()

    def g(r):
        return fc(r, rr) * cheb(2 * r / rr - 1, 5)

    r01, r02, r12 = (np.linalg.norm(pos[a] - pos[b]) for a, b in [(0, 1), (0, 2), (1, 2)])
    assert r01 < ar and r02 < ar and ar < r12 < rr
    cos_ti = pos[1] @ pos[2] / (r01 * r02)
    angle_ti = fc(r01, ar) * fc(r02, ar) * cheb(cos_ti, 3)
    expected = np.array([
        # Ti: two O neighbours (spin +1 each), one O-Ti-O angle.
        np.concatenate([g(r01) + g(r02), angle_ti, g(r01) + g(r02), angle_ti]),
        # O: Ti (spin -1) and the far O (+1); the far O is outside the angular cutoff: no angle.
        np.concatenate([g(r01) + g(r12), np.zeros(4), -g(r01) + g(r12), np.zeros(4)]),
        np.concatenate([g(r02) + g(r12), np.zeros(4), -g(r02) + g(r12), np.zeros(4)]),
    ])
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)


def test_isolated_cluster_matches_direct_triplet_sum():
    rng = np.random.default_rng(3)
    symbols = ["Ti", "O", "O", "Ti", "O", "O", "O"]
    s = Structure(symbols, rng.normal(scale=1.6, size=(7, 3)))
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=6.0, radial_n=8, angular_rc=4.0, angular_n=7)
    np.testing.assert_allclose(features(d, s).numpy(), reference(s, {"Ti": -1, "O": 1}, 6.0, 8, 4.0, 7),
                               rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("species,spin", [
    (("Ti", "O"), {"Ti": -1, "O": 1}),
    (("O", "Zr", "Ti"), {"O": -1, "Zr": 0, "Ti": 1}),
    (("Ti", "O", "Zr", "Li"), {"Ti": -2, "O": -1, "Zr": 1, "Li": 2}),
])
def test_small_triclinic_cell_matches_direct_sum(species, spin):
    """Cutoffs far beyond half the cell (many images of every atom, including itself)."""
    s = random_cell_structure(1)
    d = ChebyshevDescriptor(species, radial_rc=5.0, radial_n=6, angular_rc=4.0, angular_n=5)
    np.testing.assert_allclose(features(d, s).numpy(), reference(s, spin, 5.0, 6, 4.0, 5), rtol=1e-11, atol=1e-10)


@pytest.mark.parametrize("cell,frac", [
    (np.eye(3) * 1.5, [[0.1, 0.2, 0.3]]),                                              # one atom, 1.5 Å cube
    ([[2.0, 0, 0], [1.9, 0.6, 0], [0.3, 0.2, 1.7]], [[0.1, 0.2, 0.3], [0.6, 0.4, -0.9]]),  # 17° between a and b
])
def test_tiny_and_very_skewed_cells_match_direct_sum(cell, frac):
    cell = np.array(cell, dtype=float)
    s = Structure(["Ti", "O"][:len(frac)], np.array(frac) @ cell, cell)
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=5.0, radial_n=4, angular_rc=3.0, angular_n=3)
    np.testing.assert_allclose(features(d, s).numpy(), reference(s, {"Ti": -1, "O": 1}, 5.0, 4, 3.0, 3),
                               rtol=1e-11, atol=1e-10)


def test_single_species_has_no_weighted_channel():
    s = random_cell_structure(2, symbols=("Si",) * 4)
    d = ChebyshevDescriptor(["Si"], radial_rc=4.5, radial_n=5, angular_rc=3.5, angular_n=4)
    np.testing.assert_allclose(features(d, s).numpy(), reference(s, {"Si": 0}, 4.5, 5, 3.5, 4), rtol=1e-11, atol=1e-10)


def test_translation_rotation_permutation_invariance():
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=5.0, radial_n=8, angular_rc=4.0, angular_n=4)
    s = random_cell_structure(4)
    base = features(d, s)
    rng = np.random.default_rng(5)
    moved = s.copy(positions=s.positions + rng.normal(size=3) * 7)
    torch.testing.assert_close(features(d, moved), base, rtol=1e-11, atol=1e-11)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotated = s.copy(positions=s.positions @ q.T, cell=s.cell @ q.T)
    torch.testing.assert_close(features(d, rotated), base, rtol=1e-11, atol=1e-11)
    order = rng.permutation(len(s))
    permuted = s.copy(symbols=[s.symbols[k] for k in order], positions=s.positions[order])
    torch.testing.assert_close(features(d, permuted), base[order], rtol=1e-11, atol=1e-11)
    cluster = Structure(s.symbols, s.positions)
    torch.testing.assert_close(features(d, cluster.copy(positions=cluster.positions @ q.T + 3.0)),
                               features(d, cluster), rtol=1e-11, atol=1e-11)


def test_moving_one_atom_by_a_lattice_vector_changes_nothing():
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=5.0, radial_n=8, angular_rc=4.0, angular_n=4)
    s = random_cell_structure(6)
    base = features(d, s)
    rng = np.random.default_rng(7)
    for atom in range(len(s)):
        shifted = s.positions.copy()
        shifted[atom] += rng.integers(-2, 3, size=3) @ s.cell
        torch.testing.assert_close(features(d, s.copy(positions=shifted)), base, rtol=1e-11, atol=1e-11)


def test_cell_equals_its_supercell_per_atom():
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=6.0, radial_n=10, angular_rc=4.5, angular_n=4)
    s = random_cell_structure(8)
    reps = (2, 1, 3)
    offsets = [np.array(n) @ s.cell for n in itertools.product(*(range(k) for k in reps))]
    big = Structure(s.symbols * len(offsets), np.concatenate([s.positions + o for o in offsets]),
                    s.cell * np.array(reps)[:, None])
    expected = features(d, s).repeat(len(offsets), 1)
    torch.testing.assert_close(features(d, big), expected, rtol=1e-10, atol=1e-10)


def energy_and_forces(descriptor, structure, readout, positions=None):
    batch = make_batch([structure], descriptor.species, descriptor.cutoff)
    positions = torch.tensor(structure.positions if positions is None else positions, requires_grad=True)
    batch.positions = positions
    energy = (descriptor(batch) @ readout).sum()
    (gradient,) = torch.autograd.grad(energy, positions)
    return energy.item(), -gradient.numpy()


@pytest.mark.parametrize("periodic", [True, False])
def test_forces_equal_finite_differences(periodic):
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=5.0, radial_n=10, angular_rc=4.0, angular_n=4)
    s = random_cell_structure(9)
    if not periodic:
        s = Structure(s.symbols, s.positions * 0.6)
    readout = torch.randn(d.n_features, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, forces = energy_and_forces(d, s, readout)
    h = 1e-5
    numeric = np.zeros_like(forces)
    for atom, axis in itertools.product(range(len(s)), range(3)):
        plus, minus = s.positions.copy(), s.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        numeric[atom, axis] = -(energy_and_forces(d, s, readout, plus)[0]
                                - energy_and_forces(d, s, readout, minus)[0]) / (2 * h)
    assert np.abs(forces).max() > 1e-2
    np.testing.assert_allclose(forces, numeric, rtol=1e-6, atol=1e-7 * np.abs(forces).max())


def test_second_derivatives_for_force_training():
    """create_graph=True: the Hessian-vector product equals finite differences of the forces."""
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=5.0, radial_n=8, angular_rc=4.0, angular_n=4)
    s = random_cell_structure(10)
    readout = torch.randn(d.n_features, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    direction = np.random.default_rng(11).normal(size=s.positions.shape)
    batch = make_batch([s], d.species, d.cutoff)
    batch.positions.requires_grad_(True)
    (gradient,) = torch.autograd.grad((d(batch) @ readout).sum(), batch.positions, create_graph=True)
    (hvp,) = torch.autograd.grad((gradient * torch.tensor(direction)).sum(), batch.positions)
    h = 1e-5
    numeric = (energy_and_forces(d, s, readout, s.positions - h * direction)[1]
               - energy_and_forces(d, s, readout, s.positions + h * direction)[1]) / (2 * h)
    np.testing.assert_allclose(hvp.numpy(), numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())


def test_batches_and_chunks_match_single_structures():
    d = ChebyshevDescriptor(["Ti", "O"], radial_rc=5.0, radial_n=6, angular_rc=4.0, angular_n=3)
    structures = [random_cell_structure(12), Structure(["O", "Ti", "O"], [[0, 0, 0], [1.9, 0, 0], [2.5, 1.6, 0]]),
                  Structure(["Ti"], [[0.0, 0.0, 0.0]]), random_cell_structure(13, symbols=("O", "O", "Ti"))]
    single = [features(d, s) for s in structures]
    batch = make_batch(structures, d.species, d.cutoff)
    assert batch.n_atoms.tolist() == [5, 3, 1, 3]
    assert batch.structure_index.tolist() == [0] * 5 + [1] * 3 + [2] + [3] * 3
    together = torch.split(d(batch.to("cpu")), batch.n_atoms.tolist())
    chunked = featurize(d, structures, batch_size=3)
    for one, two, three in zip(single, together, chunked):
        torch.testing.assert_close(two, one, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(three, one, rtol=1e-12, atol=1e-12)
    assert torch.count_nonzero(single[2]) == 0


def test_pair_vectors_use_the_original_positions():
    s = random_cell_structure(14)
    batch = make_batch([s], ["Ti", "O"], 4.0)
    vectors = batch.positions[batch.pair_j] - batch.positions[batch.pair_i] + batch.pair_shift
    distances = torch.linalg.vector_norm(vectors, dim=1)
    assert distances.max() < 4.0 and distances.min() > 0.1
    # An atom's own images appear: the cell is smaller than the cutoff.
    assert bool((batch.pair_i == batch.pair_j).any())
    n_pairs = sum(len(reference_distances(s, a, 4.0)) for a in range(len(s)))
    assert 2 * len(distances) == n_pairs  # a half list: each pair once


def reference_distances(s, atom, rc):
    vec = (s.positions[None] + (np.array(list(itertools.product(range(-4, 5), repeat=3))) @ s.cell)[:, None]
           - s.positions[atom]).reshape(-1, 3)
    d = np.linalg.norm(vec, axis=1)
    return d[(d > 1e-9) & (d < rc)]


def test_user_errors_are_clear():
    d = ChebyshevDescriptor(["Ti", "O"])
    with pytest.raises(InputError, match=r"odd\.xsf.*Zr.*not in the descriptor's species"):
        make_batch([Structure(["Ti", "Zr"], [[0, 0, 0], [2, 0, 0]], source="odd.xsf")], d.species, d.cutoff)
    with pytest.raises(InputError, match=r"dup\.xsf.*atoms 1 and 2"):
        make_batch([Structure(["Ti", "O"], [[0, 0, 0], [0, 0, 0]], source="dup.xsf")], d.species, d.cutoff)
    with pytest.raises(InputError, match="singular"):
        make_batch([Structure(["Ti"], [[0, 0, 0]], cell=[[1, 0, 0], [2, 0, 0], [0, 0, 1]])], d.species, d.cutoff)
    with pytest.raises(ValueError, match="needs 8.0"):
        d(make_batch([random_cell_structure()], d.species, 6.5))
    with pytest.raises(ValueError, match="repeats"):
        ChebyshevDescriptor(["Ti", "Ti"])
    with pytest.warns(UserWarning, match="stale typespin"):
        ChebyshevDescriptor(["Ti", "O"], radial_rc=4.0, angular_rc=5.0)


@pytest.mark.tio2
def test_real_tio2_structures_match_direct_sum(tio2_xsf_dir):
    from pyita.io.xsf import read_xsf

    structures = [read_xsf(tio2_xsf_dir / f"structure{k:04d}.xsf") for k in (1, 2345, 7000)]
    d = ChebyshevDescriptor(["Ti", "O"])
    for s, computed in zip(structures, featurize(d, structures)):
        np.testing.assert_allclose(computed.numpy(), reference(s, {"Ti": -1, "O": 1}), rtol=1e-10, atol=1e-9)
