"""Prediction, error tables and the ASE calculator."""

from __future__ import annotations

import csv
import json

import ase.io
import numpy as np
import pytest
from ase.calculators.calculator import CalculatorSetupError, PropertyNotImplementedError
from ase.optimize import BFGS

from pyita.calculator import PyitaCalculator
from pyita.errors import InputError
from pyita.io import read_structures, write_xsf
from pyita.metrics import error_tables
from pyita.predict import predict, run_predict
from test_model import small_potential
from trainer_data import emt_molecule, emt_structures


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    potential = small_potential()
    potential.metadata = {"seed": 3, "settings": {"hidden": potential.hidden}}
    potential.save(path)
    return path


def test_calculator_forces_and_stress_match_finite_differences(model_file):
    atoms = emt_structures(1, seed=6)[0].to_ase()
    atoms.calc = PyitaCalculator(model_file, device="cpu")
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False)
    h = 1e-5
    for atom, axis in [(0, 0), (1, 2), (3, 1)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[atom, axis] += sign * h
            energies.append(moved.get_potential_energy())
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h), abs=1e-7)
    volume = atoms.get_volume()
    for i, j in [(0, 0), (1, 2), (2, 0)]:
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / 2
            strain[j, i] += sign * h / 2
            strained = atoms.copy()
            strained.calc = atoms.calc
            strained.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
            energies.append(strained.get_potential_energy())
        assert stress[i, j] == pytest.approx((energies[0] - energies[1]) / (2 * h * volume), abs=1e-8)


def test_calculator_relaxes_and_refuses_what_it_cannot_do(model_file):
    atoms = emt_structures(1, seed=7)[0].to_ase()
    atoms.calc = PyitaCalculator(model_file, device="cpu")
    start = atoms.get_potential_energy()
    BFGS(atoms, logfile=None).run(fmax=1e-4, steps=20)
    assert atoms.get_potential_energy() < start
    molecule = emt_molecule().to_ase()
    molecule.calc = PyitaCalculator(small_potential(species=("C", "H", "O")))
    assert np.isfinite(molecule.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError):
        molecule.get_stress()
    slab = atoms.copy()
    slab.pbc = (True, True, False)
    slab.calc = atoms.calc
    with pytest.raises(CalculatorSetupError, match=r"pbc=\[True, True, False\].*vacuum"):   # ASE's own error type
        slab.get_potential_energy()
    molecule.calc = PyitaCalculator(model_file)
    with pytest.raises(CalculatorSetupError, match="element.*C, H, O not covered by the model"):
        molecule.get_potential_energy()


def test_calculator_per_atom_energies_sum_to_the_energy(model_file):
    calc = PyitaCalculator(model_file)
    assert "energies" in calc.implemented_properties
    for atoms in [s.to_ase() for s in emt_structures(2, seed=4, atoms_per_cell=8)]:
        atoms.calc = calc
        energies = atoms.get_potential_energies()   # ASE's per-atom property
        assert energies.dtype == np.float64 and energies.shape == (len(atoms),)
        assert energies.sum() == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        # each atom's energy is its species' reference plus its network's scaled output: not all equal
        assert np.ptp(energies) > 1e-6
    # isolated structures too
    molecule = emt_molecule().to_ase()
    molecule.calc = PyitaCalculator(small_potential(species=("C", "H", "O")))
    assert molecule.get_potential_energies().sum() == pytest.approx(molecule.get_potential_energy(), abs=1e-10)


def test_calculate_many_equals_one_by_one(model_file):
    calc = PyitaCalculator(model_file)
    atoms_list = [s.to_ase() for s in emt_structures(3, seed=11) + emt_structures(2, seed=12, atoms_per_cell=8)]
    labels = [atoms.calc for atoms in atoms_list]   # the EMT labels on a SinglePointCalculator
    batched = calc.calculate_many(atoms_list, properties=("energy", "forces", "stress"), batch_size=2)
    assert len(batched) == len(atoms_list)
    for atoms, result, label in zip(atoms_list, batched, labels):
        single = atoms.copy()
        single.calc = PyitaCalculator(model_file)
        assert result["energy"] == pytest.approx(single.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(result["energies"], single.get_potential_energies(), atol=1e-10)
        np.testing.assert_allclose(result["forces"], single.get_forces(), atol=1e-10)
        np.testing.assert_allclose(result["stress"], single.get_stress(), atol=1e-10)
        assert atoms.calc is label   # the Atoms are left as they are
    slab = atoms_list[0].copy()
    slab.pbc = (True, False, True)
    with pytest.raises(CalculatorSetupError):   # refused before any structure is evaluated
        calc.calculate_many(atoms_list + [slab])
    with pytest.raises(PropertyNotImplementedError):
        PyitaCalculator(small_potential(species=("C", "H", "O"))).calculate_many([emt_molecule().to_ase()],
                                                                                  properties=("stress",))


def test_error_tables_against_an_independent_calculation(model_file):
    structures = emt_structures(4, seed=8)
    structures[1] = structures[1].copy(energy_kind="cohesive", energy=structures[1].energy + 2.0)
    predictions = predict(model_file, structures, batch_size=3)
    rows, force_rows, summary = error_tables(structures, [p.energy for p in predictions],
                                             [p.forces for p in predictions], small_potential().reference_energies())
    calc = PyitaCalculator(model_file)
    expected_energy, expected_force = [], []
    for k, s in enumerate(structures):
        atoms = s.to_ase()
        atoms.calc = calc
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        assert predictions[k].energy == pytest.approx(energy, abs=1e-10)
        np.testing.assert_allclose(predictions[k].forces, forces, atol=1e-10)
        atomic_sum = -1.5 * s.symbols.count("Cu") - 2.0 * s.symbols.count("Au")
        reference = s.energy + atomic_sum if s.energy_kind == "cohesive" else s.energy
        expected_energy.append((energy - reference) / len(s) * 1000)
        expected_force.append((forces - s.forces).ravel())
    assert [r["error_meV_per_atom"] for r in rows] == pytest.approx(expected_energy, abs=1e-8)
    e = np.abs(expected_energy)
    f = np.abs(np.concatenate(expected_force))
    assert summary["energy_meV_per_atom"]["mae"] == pytest.approx(e.mean())
    assert summary["energy_meV_per_atom"]["rmse"] == pytest.approx(np.sqrt(np.mean(e**2)))
    assert summary["force_components_eV_per_A"]["rmse"] == pytest.approx(np.sqrt(np.mean(f**2)))
    assert summary["force_components_eV_per_A"]["n"] == f.size == 3 * len(force_rows)


def test_predict_to_dir_writes_tables_that_read_back(model_file, tmp_path):
    structures = emt_structures(3, seed=9)
    folder = tmp_path / "xsf"
    folder.mkdir()
    for k, s in enumerate(structures):
        write_xsf(folder / f"s{k}.xsf", s)
    out = tmp_path / "pred"
    summary = run_predict(model_file, [str(folder)], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["forces.csv", "predictions.csv", "predictions.extxyz",
                                                     "summary.json"]
    record = json.loads((out / "summary.json").read_text())
    assert record.pop("files") == ["forces.csv", "predictions.csv", "predictions.extxyz"]   # what it wrote
    assert record == json.loads(json.dumps(summary))
    with open(out / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    frames = ase.io.read(out / "predictions.extxyz", index=":")
    expected = predict(model_file, structures)
    for row, frame, p, s in zip(rows, frames, expected, structures):
        assert float(row["energy_pred_eV"]) == pytest.approx(p.energy, rel=1e-12)
        # predictions under PYITA_*, references under MACE's REF_*, and nothing under ASE's own keys
        assert frame.calc is None and "energy" not in frame.info and "forces" not in frame.arrays
        assert frame.info["PYITA_energy"] == pytest.approx(p.energy, rel=1e-12)
        np.testing.assert_allclose(frame.arrays["PYITA_forces"], p.forces, atol=1e-7)  # extxyz keeps 8 decimals
        assert frame.info["REF_energy"] == pytest.approx(s.energy, abs=1e-9)   # as the XSF file holds it
        np.testing.assert_allclose(frame.arrays["REF_forces"], s.forces, atol=1e-7)
    # read back, the file's labels are the references (REF_* recognised without being named)
    again = read_structures(str(out / "predictions.extxyz"))
    assert [a.energy for a in again] == pytest.approx([s.energy for s in structures], abs=1e-9)
    np.testing.assert_allclose(again[0].forces, structures[0].forces, atol=1e-7)
    with open(out / "forces.csv") as handle:
        assert len(list(csv.DictReader(handle))) == sum(len(s) for s in structures)
    # A failing run (a species the model lacks) leaves nothing behind.
    write_xsf(folder / "z.xsf", emt_molecule().copy(cell=np.eye(3) * 12))
    with pytest.raises(InputError, match="not covered"):
        run_predict(model_file, [str(folder)], tmp_path / "pred2", progress=False)
    assert not (tmp_path / "pred2").exists()
