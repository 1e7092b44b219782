"""aenet's .nn network files: the record format, PyITA potentials exported to aenet and aenet potentials
imported into PyITA, each checked against the real predict.x (../shared/tools or AENET_BIN; those tests skip
cleanly without it).

predict.x prints total energies with 8 decimals and forces with 6, so agreement is asserted to 1e-6 eV/atom
and 1e-5 eV/Å; what is reached (printing precision, ~1e-9 eV/atom and 5e-7 eV/Å) is printed with ``-s``.
"""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from pyita.backends import aenet
from pyita.calculator import PyitaCalculator
from pyita.descriptors import ChebyshevDescriptor
from pyita.errors import InputError, PyitaError
from pyita.io.aenet_inputs import PredictIn, format_predict_in
from pyita.io.aenet_nn import read_nn, write_nn
from pyita.io.aenet_outputs import read_predict_output
from pyita.io.xsf import read_xsf
from pyita.io.xsf_write import write_xsf
from pyita.model.aenet import network_file_names, potential_to_nn, read_aenet_potential
from pyita.model import Potential, load_potential
from pyita.predict import predict
from pyita.sample import load_sample
from pyita.structure import Structure
from pyita.train.fit import train
from pyita.train.settings import TrainSettings

from faults import error_line, run_cli, tree_hashes

DATA = Path(__file__).resolve().parent / "data" / "aenet"
E_TI, E_O = -1626.66972707, -433.23448532
SMALL = {"radial_rc": 4.5, "radial_n": 5, "angular_rc": 4.0, "angular_n": 3}
ENERGY_TOL = 1e-6   # eV/atom
FORCE_TOL = 1e-5    # eV/Å


def aenet_or_skip() -> dict:
    try:
        return aenet.find_executables()
    except PyitaError:
        pytest.skip("aenet (generate.x, train.x, predict.x) is not installed")


def run_predict(networks: dict[str, Path], structures: list[Structure], folder: Path) -> list[dict]:
    """predict.x (with FORCES) on ``structures`` written as XSF into ``folder``; its parsed results."""
    exe = aenet_or_skip()["predict"]
    folder.mkdir(parents=True)
    names = []
    for k, s in enumerate(structures):
        names.append(f"s{k:03d}.xsf")
        write_xsf(folder / names[-1], s)
    spec = PredictIn(networks={sym: str(path) for sym, path in networks.items()}, files=names, forces=True)
    (folder / "predict.in").write_text(format_predict_in(spec))
    done = subprocess.run([str(exe), "predict.in"], cwd=folder, capture_output=True, text=True, timeout=300)
    (folder / "predict.out").write_text(done.stdout)
    assert done.returncode == 0 and "Error" not in done.stdout + done.stderr, done.stdout[-2000:] + done.stderr
    results = read_predict_output(folder / "predict.out")
    assert len(results) == len(structures)
    return results


def deviations(potential: Potential, structures: list[Structure], results: list[dict]) -> tuple[float, float]:
    """Largest |ΔE| per atom (eV/atom) and |ΔF| component (eV/Å) between PyITA and predict.x."""
    ours = predict(potential, structures)
    d_energy = max(abs(p.energy - r["total_energy"]) / len(s) for p, r, s in zip(ours, results, structures))
    d_force = max(float(np.abs(p.forces - r["forces"]).max()) for p, r in zip(ours, results))
    return d_energy, d_force


def assert_agree(case: str, potential: Potential, structures: list[Structure], results: list[dict]) -> None:
    d_energy, d_force = deviations(potential, structures, results)
    print(f"\n{case}: max |ΔE| {d_energy:.2e} eV/atom, max |ΔF| {d_force:.2e} eV/Å over {len(structures)} "
          f"structures ({sum(map(len, structures))} atoms)")
    assert d_energy < ENERGY_TOL and d_force < FORCE_TOL


def export_and_compare(case: str, potential: Potential, structures: list[Structure], tmp_path: Path) -> None:
    """Export ``potential``, run predict.x with the files, compare with PyITA's own predictions."""
    aenet.run_aenet_export(potential, tmp_path / "nets")
    networks = {s: tmp_path / "nets" / name for s, name in network_file_names(potential).items()}
    assert_agree(case, potential, structures, run_predict(networks, structures, tmp_path / "predict"))


def fit(structures: list[Structure], **settings) -> Potential:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # e.g. the least-squares fit of reference energies
        return train(structures, settings=TrainSettings.from_flat(device="cpu", **settings), use_cache=False).potential


def alloy(n: int, species: list[str], seed: int = 0) -> list[Structure]:
    """Rattled random fcc alloys of ``species`` (EMT labels), one atom outside the cell; the last structure
    is an isolated cluster cut from such a cell."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
        atoms.set_chemical_symbols(list(species) + list(rng.choice(species, len(atoms) - len(species))))
        atoms.rattle(0.1, seed=int(rng.integers(2**31)))
        atoms.positions[0] += atoms.cell[2]
        atoms.calc = EMT()
        atoms.get_forces()
        out.append(Structure.from_ase(atoms, source=f"alloy-{k}"))
    last = out[-1]
    out[-1] = Structure(last.symbols, last.positions, None, last.energy, last.forces, source="cluster")
    return out


def small_potential(species=("Ti", "O"), hidden="4:tanh,3:sigmoid", seed=3, **descriptor) -> Potential:
    """An untrained potential with non-trivial normalisation, for the format and refusal tests."""
    potential = Potential(ChebyshevDescriptor(species, **{**SMALL, **descriptor}), hidden,
                          {s: -10.0 * (k + 1) for k, s in enumerate(species)}, seed=seed)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        potential.feature_shift.copy_(torch.from_numpy(rng.normal(2.0, 1.0, potential.feature_shift.shape)))
        potential.feature_scale.copy_(torch.from_numpy(rng.uniform(0.5, 3.0, potential.feature_scale.shape)))
        potential.energy_shift.fill_(-0.7)
        potential.energy_scale.fill_(0.05)
    return potential


@pytest.fixture(scope="module")
def trainx_run(tmp_path_factory) -> Path:
    """A run folder whose Ti and O networks aenet's train.x wrote (3 epochs)."""
    aenet_or_skip()
    folder = tmp_path_factory.mktemp("trainx") / "run"
    train_set = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-4].xsf"))]
    test_set = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[5-6].xsf"))]
    aenet.train_and_evaluate_aenet(train_set, test_set, {"iterations": 3, "hidden": "5:tanh",
                                                         "reference_energies": {"Ti": E_TI, "O": E_O}}, folder)
    return folder


# ------------------------------------------------------------------------------------- the format itself

def test_written_files_read_back_the_same_and_keep_predictions(tmp_path):
    """Potential → .nn files → Potential gives the same weights, normalisation and predictions."""
    potential = small_potential(("Ti", "O"))
    (tmp_path / "nets").mkdir()
    for sym, nnfile in potential_to_nn(potential).items():
        write_nn(tmp_path / "nets" / f"{sym}.nn", nnfile)
        write_nn(tmp_path / "again.nn", read_nn(tmp_path / "nets" / f"{sym}.nn"))
        assert (tmp_path / "again.nn").read_bytes() == (tmp_path / "nets" / f"{sym}.nn").read_bytes()
    back = read_aenet_potential(tmp_path / "nets")
    assert back.species == potential.species and back.hidden == potential.hidden
    assert back.descriptor.settings() == potential.descriptor.settings()
    assert back.reference_energies() == potential.reference_energies()
    for name, tensor in potential.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], tensor, rtol=1e-15, atol=1e-15, msg=name)
    structures = load_sample("tio2-diverse")[:3]
    for p, q in zip(predict(potential, structures), predict(back, structures)):
        assert abs(p.energy - q.energy) < 1e-9 and np.abs(p.forces - q.forces).max() < 1e-9


def test_trainx_files_read_and_write_back_byte_for_byte(trainx_run, tmp_path):
    for path in sorted(trainx_run.glob("*.nn")):
        nnfile = read_nn(path)
        assert nnfile.setup.atomtype == path.name.split(".")[0] and nnfile.setup.envtypes == ["Ti", "O"]
        assert nnfile.network.nnodes == [44, 5, 1] and nnfile.network.activations == [1, 0]
        write_nn(tmp_path / path.name, nnfile)
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "cut-marker", "foreign", "empty", "trailing"])
def test_damaged_files_give_one_clear_error(tmp_path, damage):
    nnfile = tmp_path / "Ti.nn"
    write_nn(nnfile, potential_to_nn(small_potential())["Ti"])
    data = nnfile.read_bytes()
    nnfile.write_bytes({"truncated": data[:len(data) // 2], "cut-marker": data[:-2], "empty": b"",
                        "foreign": b"TiO2 rutile\n" + b"0.0 1.0 2.0\n" * 50, "trailing": data + b"\0" * 8}[damage])
    with pytest.raises(InputError) as caught:
        read_aenet_potential(nnfile)
    assert caught.value.path == str(nnfile) and "not a readable aenet .nn file" in str(caught.value)


# ------------------------------------------------------------------------------------ what cannot cross

def _edited(tmp_path: Path, potential: Potential, edit) -> Path:
    """The potential's .nn files in a folder, with ``edit(species, nnfile)`` applied before writing."""
    folder = tmp_path / "nets"
    folder.mkdir()
    for sym, nnfile in potential_to_nn(potential).items():
        edit(sym, nnfile)
        write_nn(folder / f"{sym}.nn", nnfile)
    return folder


def _twist(sym, f):
    f.network.activations[0] = 4


def _behler(sym, f):
    f.setup.sftype = "Behler2011"


def _other_cutoff(sym, f):
    if sym == "O":
        f.setup.sfparam[0, 0] = 5.0


def _other_shift(sym, f):
    if sym == "O":
        f.trainset = replace(f.trainset, shift=f.trainset.shift + 0.1)


def _other_env_order(sym, f):
    if sym == "O":
        f.setup.envtypes = ["O", "Ti"]


@pytest.mark.parametrize("edit, words", [
    (_twist, ["twist", "no PyITA equivalent"]), (_behler, ["Behler2011", "Chebyshev"]),
    (_other_cutoff, ["descriptor", "differs from O.nn"]), (_other_shift, ["energy normalisation", "differs"]),
    (_other_env_order, ["ENV Ti, O", "differs from O.nn"]),
])
def test_import_refuses_what_pyita_cannot_represent(tmp_path, edit, words):
    folder = _edited(tmp_path, small_potential(), edit)
    with pytest.raises(InputError) as caught:
        load_potential(folder)
    assert str(folder) in caught.value.path and all(w in str(caught.value) for w in words), str(caught.value)


def test_import_needs_one_network_per_env_species(tmp_path):
    folder = _edited(tmp_path, small_potential(), lambda sym, f: None)
    (folder / "O.nn").unlink()
    with pytest.raises(InputError, match="no network file for O"):
        load_potential(folder)
    with pytest.raises(InputError, match="no aenet network files"):
        load_potential(tmp_path)


def test_export_refuses_angular_cutoff_beyond_radial_for_several_species(tmp_path):
    with pytest.warns(UserWarning, match="angular_rc > radial_rc"):
        potential = small_potential(radial_rc=3.5, angular_rc=4.0)
    with pytest.raises(PyitaError, match="stale typespin"):
        aenet.run_aenet_export(potential, tmp_path / "nets")
    assert not (tmp_path / "nets").exists()
    single = small_potential(("Cu",), radial_rc=3.5, angular_rc=4.0)   # no typespin: exportable
    assert set(potential_to_nn(single)) == {"Cu"}


# ------------------------------------------------------------------------ export, checked with predict.x

def test_cli_export_of_an_energy_trained_sample_model_runs_in_predict_x(tmp_path):
    """`pyita aenet export` of a model trained on the bundled TiO2 sample (aenet's default descriptor,
    tanh and sigmoid layers): predict.x reproduces PyITA's energies and forces."""
    aenet_or_skip()
    structures = load_sample("tio2-md")
    potential = fit(structures[:8], iterations=4, hidden="6:tanh,4:sigmoid")
    potential.save(tmp_path / "model.pt")
    done = run_cli("aenet", "export", tmp_path / "model.pt", "--out", tmp_path / "nets", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    names = {"Ti": "Ti.6t-4s.nn", "O": "O.6t-4s.nn"}
    assert sorted(p.name for p in (tmp_path / "nets").iterdir()) == sorted([*names.values(), "pyita-export.json"])
    again = run_cli("aenet", "export", tmp_path / "model.pt", "--out", tmp_path / "nets", cwd=tmp_path)
    error_line(again, "not empty", "--overwrite")
    results = run_predict({s: tmp_path / "nets" / n for s, n in names.items()}, structures[-3:], tmp_path / "p")
    assert_agree("TiO2 sample, energy-trained", potential, structures[-3:], results)


def test_force_trained_model_on_small_cells_matches_predict_x(tmp_path):
    """Direct force training, mtanh and linear layers, cells of 11–48 atoms (many periodic images)."""
    aenet_or_skip()
    structures = sorted(load_sample("tio2-diverse"), key=len)[:16]
    potential = fit(structures[::2], iterations=3, hidden="5:mtanh,3:linear", force_weight=0.1, descriptor=SMALL)
    export_and_compare("TiO2 sample, force-trained", potential, structures[1::2], tmp_path)


@pytest.mark.parametrize("n_species", [3, 4])
def test_alloys_of_several_species_match_predict_x(tmp_path, n_species):
    """Typespin weights for three (−1, 0, 1) and four (−2, −1, 1, 2) species, an atom outside its cell and an
    isolated cluster."""
    aenet_or_skip()
    structures = alloy(10, ["Cu", "Ni", "Al", "Pd"][:n_species], seed=n_species)
    potential = fit(structures[:6], iterations=3, hidden="4:tanh", descriptor=SMALL)
    assert len(potential.species) == n_species
    export_and_compare(f"EMT alloy, {n_species} species", potential, structures[6:], tmp_path)


def test_model_trained_on_the_real_dft_set_matches_predict_x(tio2_subset_1000, tmp_path):
    aenet_or_skip()
    structures = [read_xsf(p) for p in tio2_subset_1000[:14]]
    potential = fit(structures[:8], iterations=3, hidden="5:tanh,5:tanh")
    export_and_compare("TiO2 DFT set", potential, structures[8:], tmp_path)


def test_features_aenet_zeroes_are_imported_as_aenet_uses_them(tmp_path):
    """A feature whose spread in aenet's record is zero is multiplied by 0 in aenet; the import agrees with
    predict.x (here for an edited exported file)."""
    aenet_or_skip()
    structures = load_sample("tio2-diverse")[:4]
    potential = fit(structures, iterations=2, hidden="4:tanh", descriptor=SMALL)

    def flatten(sym, f):
        if sym == "Ti":
            f.setup.sfval_cov[2] = f.setup.sfval_avg[2] ** 2

    folder = _edited(tmp_path, potential, flatten)
    imported = load_potential(folder)
    assert not imported.networks.nets[0][0].weight[:, 2].detach().any()
    networks = {s: folder / f"{s}.nn" for s in potential.species}
    assert_agree("zero-spread feature", imported, structures, run_predict(networks, structures, tmp_path / "p"))


# ----------------------------------------------------------------------- import of train.x's networks

def test_trainx_networks_in_pyita_match_predict_x(trainx_run):
    """PyITA's energies and forces with train.x's networks equal predict.x's (the run's own predict.out)."""
    potential = load_potential(trainx_run)
    assert potential.species == ("Ti", "O") and potential.hidden == "5:tanh"
    assert potential.reference_energies() == {"Ti": E_TI, "O": E_O}
    results = read_predict_output(trainx_run / "predict.out")
    structures = [read_xsf(trainx_run / r["file"]) for r in results]
    assert_agree("train.x networks in PyITA", potential, structures, results)
    atoms = structures[0].to_ase()
    atoms.calc = PyitaCalculator(trainx_run)   # ASE runs the aenet potential through PyITA
    assert abs(atoms.get_potential_energy() - results[0]["total_energy"]) / len(atoms) < ENERGY_TOL
    assert np.abs(atoms.get_forces() - results[0]["forces"]).max() < FORCE_TOL


def test_training_continues_from_trainx_networks_keeping_their_settings(trainx_run, tmp_path):
    """--initial-networks: descriptor, hidden layers, normalisation and reference energies come from the
    networks; the first step starts at their weights (a tiny Adam step changes nothing visible)."""
    start = load_potential(trainx_run)
    structures = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0*.xsf"))]
    settings = TrainSettings.from_flat(initial_networks=trainx_run, iterations=1, method="adam", learning_rate=1e-12,
                                       device="cpu")
    assert settings.model.hidden is None and settings.model.descriptor is None   # nothing read yet
    result = train(structures, settings=settings, use_cache=False)
    adopted, trained = result.settings.model, result.potential
    assert adopted.hidden == "5:tanh" and adopted.descriptor == {k: v for k, v in start.descriptor.settings().items()
                                                                 if k != "species"}
    for name in ("feature_shift", "feature_scale", "energy_shift", "energy_scale", "reference"):
        assert torch.equal(getattr(trained, name), getattr(start, name)), name
    for p, q in zip(predict(start, structures), predict(trained, structures)):
        assert abs(p.energy - q.energy) < 1e-6
    with pytest.raises(PyitaError, match="radial_rc 6.0"):
        train(structures, settings=TrainSettings.from_flat(initial_networks=trainx_run, descriptor={"radial_rc": 6.0}))
    with pytest.raises(PyitaError, match="reference energies Ti"):
        train(structures, settings=settings, reference_energies={"Ti": -1.0, "O": E_O})


def test_training_continues_from_a_pyita_model_without_refitting_its_normalisation(tmp_path):
    structures = alloy(8, ["Cu", "Ni", "Al"])
    first = fit(structures, iterations=2, hidden="4:tanh", descriptor=SMALL)
    first.save(tmp_path / "m.pt")
    settings = TrainSettings.from_flat(initial_networks=tmp_path / "m.pt", iterations=2, device="cpu")
    result = train(structures[:4], settings=settings, use_cache=False)
    again = result.potential
    assert result.settings.model.hidden == "4:tanh" and result.settings.model.descriptor == SMALL
    assert again.metadata["settings"]["hidden"] == "4:tanh" and again.metadata["settings"]["descriptor"] == SMALL
    assert again.species == first.species
    for name in ("feature_shift", "feature_scale", "energy_shift", "energy_scale", "reference"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name


def test_cli_train_from_initial_networks_and_its_refusals(trainx_run, tmp_path):
    data = str(DATA / "xsf" / "s0*.xsf")
    done = run_cli("train", data, "--initial-networks", trainx_run, "--iterations", 2, "--test-fraction", 0,
                   "--out", tmp_path / "m.pt", "-q", "--no-cache", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    model, start = load_potential(tmp_path / "m.pt"), load_potential(trainx_run)
    assert model.descriptor.settings() == start.descriptor.settings() and model.hidden == "5:tanh"
    assert torch.equal(model.feature_scale, start.feature_scale)
    assert model.metadata["settings"]["initial_networks"] == str(trainx_run)
    before = tree_hashes(tmp_path)
    conflict = run_cli("train", data, "--initial-networks", trainx_run, "--radial-rc", 6, "--out",
                       tmp_path / "c.pt", cwd=tmp_path)
    error_line(conflict, str(trainx_run), "radial_rc 6.0")
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("problem", ["truncated", "foreign", "species"])
def test_cli_refuses_bad_initial_networks_naming_the_file(trainx_run, tmp_path, problem):
    """A truncated or foreign .nn file, or data with a species the networks lack: exit 2, one error naming
    the file, nothing written."""
    nets = tmp_path / "nets"
    nets.mkdir()
    for path in trainx_run.glob("*.nn"):
        nets.joinpath(path.name).write_bytes(path.read_bytes())
    data = str(DATA / "xsf" / "s0*.xsf")
    if problem == "truncated":
        nets.joinpath("O.5t.nn").write_bytes(nets.joinpath("O.5t.nn").read_bytes()[:500])
        named = ["O.5t.nn", "truncated"]
    elif problem == "foreign":
        nets.joinpath("O.5t.nn").write_text("O.5t.nn\n" * 100)
        named = ["O.5t.nn", "not a readable aenet .nn file"]
    else:
        import ase.io

        ase.io.write(tmp_path / "alloy.extxyz", [s.to_ase() for s in alloy(3, ["Cu", "Ni", "Al"])])
        data = str(tmp_path / "alloy.extxyz")
        named = [str(nets), "Al, Cu, Ni", "cover only Ti, O"]
    before = tree_hashes(tmp_path)
    done = run_cli("train", data, "--initial-networks", nets, "--out", tmp_path / "m.pt", cwd=tmp_path)
    error_line(done, *named)
    assert tree_hashes(tmp_path) == before
