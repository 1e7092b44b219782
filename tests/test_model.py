"""The potential: network construction, energies, exact forces and stress, saving and loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyita.descriptors import ChebyshevDescriptor, make_batch
from pyita.errors import InputError, PyitaError
from pyita.model import Potential, hidden_layers
from pyita.model.potential import MODEL_FORMAT
from trainer_data import SMALL_DESCRIPTOR, emt_molecule, emt_structures


def small_potential(species=("Cu", "Au"), hidden="6:tanh,5:sigmoid", seed=3) -> Potential:
    potential = Potential(ChebyshevDescriptor(species, **SMALL_DESCRIPTOR), hidden, {"Cu": -1.5, "Au": -2.0,
                                                                                      "C": -3.0, "H": -0.5,
                                                                                      "O": -4.0}, seed=seed)
    # Non-trivial normalisation, so the tests see it applied.
    with torch.no_grad():
        potential.feature_shift.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(1))
        potential.feature_scale.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
        potential.energy_shift.fill_(0.1)
        potential.energy_scale.fill_(0.3)
    return potential


def energy_of(potential, structure, positions=None, cell=None) -> float:
    s = structure.copy()
    if positions is not None:
        s.positions = positions
    if cell is not None:
        s.cell = cell
    batch = make_batch([s], potential.species, potential.descriptor.cutoff)
    with torch.no_grad():
        return float(potential(batch)[0])


def test_parse_hidden_accepts_aenet_forms_and_rejects_nonsense():
    assert hidden_layers("15:tanh,15:tanh") == [(15, "tanh"), (15, "tanh")]
    assert hidden_layers("10:t 5:s 3:m 2:l") == [(10, "tanh"), (5, "sigmoid"), (3, "mtanh"), (2, "linear")]
    assert hidden_layers("") == []
    for bad in ("0:tanh", "x:tanh", "15:relu"):
        with pytest.raises(PyitaError):
            hidden_layers(bad)


def test_initial_weights_depend_only_on_the_seed():
    a, b, c = small_potential(seed=7), small_potential(seed=7), small_potential(seed=8)
    for pa, pb, _ in zip(a.networks.parameters(), b.networks.parameters(), c.networks.parameters()):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.networks.parameters(), c.networks.parameters()))


@pytest.mark.parametrize("weight_init, std", [("aenet", lambda fan_in: (fan_in + 1) ** -0.5),
                                              ("pytorch", lambda fan_in: (3 * fan_in) ** -0.5)])
def test_initial_weight_ranges(weight_init, std):
    """aenet's range (ff_random_init_weights: uniform, std 1/√(fan_in + 1), biases alike) or PyTorch's
    (std 1/√(3·fan_in)): every value inside the bound, and the sample spread of a wide layer matches."""
    potential = Potential(ChebyshevDescriptor(("Cu",), **SMALL_DESCRIPTOR), "400:tanh,300:tanh", seed=0,
                          weight_init=weight_init)
    for layer in [m for m in potential.networks.nets[0] if isinstance(m, torch.nn.Linear)]:
        values = torch.cat([layer.weight.reshape(-1), layer.bias])
        expected = std(layer.in_features)
        assert values.abs().max() <= expected * 3 ** 0.5
        if values.numel() > 10000:
            assert abs(float(values.std()) / expected - 1) < 0.02


def test_energy_is_a_sum_over_atoms_with_reference_energies():
    """Batched energies equal one-by-one energies, and each equals Σ E_ref + N·shift + scale·Σ NN."""
    potential = small_potential()
    structures = emt_structures(3)
    batch = make_batch(structures, potential.species, potential.descriptor.cutoff)
    with torch.no_grad():
        together = potential(batch)
        features = potential.descriptor(batch)
        x = (features - potential.feature_shift[batch.species_index]) / potential.feature_scale[batch.species_index]
        manual = []
        for k, s in enumerate(structures):
            rows = torch.nonzero(batch.structure_index == k).squeeze(1)
            nn_sum = sum(float(potential.networks.nets[int(batch.species_index[r])](x[r:r + 1])) for r in rows)
            refs = sum({"Cu": -1.5, "Au": -2.0}[sym] for sym in s.symbols)
            manual.append(refs + len(s) * 0.1 + 0.3 * nn_sum)
    alone = [energy_of(potential, s) for s in structures]
    np.testing.assert_allclose(together.numpy(), alone, rtol=0, atol=1e-10)
    np.testing.assert_allclose(together.numpy(), manual, rtol=0, atol=1e-10)


@pytest.mark.parametrize("periodic", [True, False])
def test_forces_are_minus_the_energy_gradient(periodic):
    potential = small_potential(species=("Cu", "Au") if periodic else ("C", "H", "O"))
    structure = emt_structures(1)[0] if periodic else emt_molecule()
    batch = make_batch([structure], potential.species, potential.descriptor.cutoff)
    _, forces, _ = potential.energy_and_derivatives(batch)
    h = 1e-5
    for atom in range(len(structure)):
        for axis in range(3):
            plus, minus = structure.positions.copy(), structure.positions.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            numeric = -(energy_of(potential, structure, plus) - energy_of(potential, structure, minus)) / (2 * h)
            assert forces[atom, axis].item() == pytest.approx(numeric, abs=1e-7)


def test_strain_derivative_matches_a_strained_cell():
    """∂E/∂ε equals the finite difference of energies of homogeneously strained copies."""
    potential = small_potential()
    structure = emt_structures(1, seed=4)[0]
    batch = make_batch([structure], potential.species, potential.descriptor.cutoff)
    _, _, d_strain = potential.energy_and_derivatives(batch, forces=False, strain=True)
    h = 1e-6
    for i in range(3):
        for j in range(3):
            strain = np.zeros((3, 3))
            strain[i, j] = h
            e = [energy_of(potential, structure, structure.positions @ (np.eye(3) + sign * strain),
                           structure.cell @ (np.eye(3) + sign * strain)) for sign in (1, -1)]
            assert d_strain[0, i, j].item() == pytest.approx((e[0] - e[1]) / (2 * h), abs=1e-6)


def test_save_and_load_round_trip(tmp_path):
    potential = small_potential()
    potential.metadata = {"seed": 3, "settings": {"hidden": "6:tanh,5:sigmoid"}, "history": [{"epoch": 1}]}
    path = tmp_path / "model.pt"
    potential.save(path)
    loaded = Potential.load(path)
    structures = emt_structures(2)
    assert [energy_of(loaded, s) for s in structures] == [energy_of(potential, s) for s in structures]
    assert loaded.metadata == potential.metadata
    assert loaded.hidden == "6:tanh,5:sigmoid"
    assert loaded.descriptor.settings() == potential.descriptor.settings()
    assert loaded.reference_energies() == potential.reference_energies()
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_loading_incompatible_or_foreign_files_fails_clearly(tmp_path):
    potential = small_potential()
    path = tmp_path / "model.pt"
    potential.save(path)
    payload = torch.load(path, weights_only=True)
    payload["format"] = MODEL_FORMAT + 1
    payload["pyita_version"] = "9.0.0"
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(InputError, match="model format 2 .*pyita 9.0.0"):
        Potential.load(tmp_path / "future.pt")
    (tmp_path / "text.pt").write_text("not a model")
    with pytest.raises(InputError, match="not a PyITA model"):
        Potential.load(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a PyITA model"):
        Potential.load(tmp_path / "other.pt")
    with pytest.raises(InputError, match="no such model"):
        Potential.load(tmp_path / "missing.pt")


def test_species_outside_the_model_are_refused():
    potential = small_potential()
    with pytest.raises(InputError, match="species C, H, O not covered by the model"):
        potential.check_species([emt_molecule()])
