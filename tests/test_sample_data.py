"""The bundled TiO2 sample sets: they load, hold what pyita/data/README.md says, and their labels are
reproducible (xTB re-labelling of two structures; the generator's structures for a given seed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pyita.errors import InputError
from pyita.sample import SAMPLE_SETS, load_sample, sample_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_sample_data.py"

#: As documented in pyita/data/README.md (seed 0).
COUNTS = {"tio2-diverse": 169, "tio2-md": 150}  # 170 generated, 1 discarded (Ti–O 1.30 Å, |F| 42 eV/Å)


@pytest.fixture(scope="module")
def samples():
    return {name: load_sample(name) for name in SAMPLE_SETS}


@pytest.fixture(scope="module")
def generator():
    if not SCRIPT.exists():
        pytest.skip("scripts/make_sample_data.py is not part of an installed package")
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_sets_are_named():
    assert SAMPLE_SETS == ("tio2-diverse", "tio2-md")
    for name in SAMPLE_SETS:
        path = sample_path(name)
        assert path.is_file() and path.name == f"{name}.xyz.gz"
    assert sample_path() == sample_path("tio2-diverse")


def test_unknown_sample_lists_valid_names():
    with pytest.raises(InputError, match="tio2-diverse, tio2-md"):
        sample_path("tio2-nonsense")
    with pytest.raises(InputError, match="valid names"):
        load_sample("water")


@pytest.mark.parametrize("name", SAMPLE_SETS)
def test_sets_load_with_finite_labels(samples, name):
    structures = samples[name]
    assert len(structures) == COUNTS[name]
    for k, s in enumerate(structures):
        assert s.source == f"{name}[{k}]"
        assert set(s.symbols) == {"Ti", "O"}
        assert s.periodic and abs(np.linalg.det(s.cell)) > 40.0
        assert s.energy is not None and np.isfinite(s.energy)
        assert s.forces is not None and s.forces.shape == (len(s), 3) and np.isfinite(s.forces).all()
        assert np.abs(s.forces).max() < 25.0
        assert s.energy_kind == "total"
        assert s.info["set"] == name and s.info["method"] == "GFN1-xTB" and int(s.info["seed"]) == 0
        # xTB forces of a periodic cell sum to zero (translation invariance)
        assert np.abs(s.forces.sum(axis=0)).max() < 1e-3


def test_diverse_set_is_diverse(samples):
    structures = samples["tio2-diverse"]
    phases = {s.info["phase"] for s in structures}
    assert phases == {"rutile", "anatase", "brookite"}
    sizes = {len(s) for s in structures}
    assert min(sizes) >= 10 and max(sizes) == 48 and len(sizes) >= 5
    n_o = [s.symbols.count("O") for s in structures]
    n_ti = [s.symbols.count("Ti") for s in structures]
    assert all(o <= 2 * t for o, t in zip(n_o, n_ti))
    assert any(o == 2 * t - 1 for o, t in zip(n_o, n_ti))  # TiO2-x cells (Ti8O15, …)
    assert sum(int(s.info["n_vacancies"]) for s in structures) == sum(2 * t - o for o, t in zip(n_o, n_ti))
    assert len({float(s.info["rattle_sigma"]) for s in structures}) > 100
    # stoichiometric cells of one phase share a k-mesh, so their energies per atom are comparable
    rutile = [s.energy / len(s) for s in structures
              if s.info["phase"] == "rutile" and int(s.info["n_vacancies"]) == 0]
    assert np.ptp(rutile) < 1.0


def test_md_set_is_one_cell_with_small_energy_spread(samples):
    structures = samples["tio2-md"]
    first = structures[0]
    assert len(first) == 48 and first.symbols.count("Ti") == 16
    for s in structures:
        assert s.symbols == first.symbols
        np.testing.assert_allclose(s.cell, first.cell)
    e = np.array([s.energy / len(s) for s in structures])
    assert 1e-3 < np.ptp(e) < 0.06  # a few meV/atom, tens at most
    steps = [int(s.info["md_step"]) for s in structures]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def _relabel(structure, fold):
    """Independent re-labelling: Γ-point GFN1-xTB of the folded supercell, per image."""
    from tblite.ase import TBLite

    atoms = structure.to_ase()
    atoms.calc = None
    m = int(np.prod(fold))
    sup = atoms.repeat(fold)
    sup.calc = TBLite(method="GFN1-xTB", verbosity=0)
    return sup.get_potential_energy() / m, sup.get_forces()[: len(atoms)]


def test_labels_are_gfn1_xtb(samples):
    pytest.importorskip("tblite")
    # one diverse cell labelled through a replicated supercell (fold != 1x1x1), and one MD frame
    diverse = next(s for s in samples["tio2-diverse"] if s.info["fold"] != "1x1x1" and len(s) == 12)
    md = samples["tio2-md"][len(samples["tio2-md"]) // 2]
    for s in (diverse, md):
        fold = tuple(int(x) for x in s.info["fold"].split("x"))
        energy, forces = _relabel(s, fold)
        assert energy == pytest.approx(s.energy, abs=1e-4), s.source
        np.testing.assert_allclose(forces, s.forces, atol=2e-3, err_msg=s.source)


def test_structure_generation_is_reproducible(generator):
    a = generator.build_structures(seed=0, n=8)
    b = generator.build_structures(seed=0, n=8)
    c = generator.build_structures(seed=1, n=8)
    longer = generator.build_structures(seed=0, n=12)
    assert len(a) == 8 and len(longer) == 12
    for x, y, z in zip(a, b, longer):
        assert x.get_chemical_symbols() == y.get_chemical_symbols() == z.get_chemical_symbols()
        np.testing.assert_array_equal(x.positions, y.positions)
        np.testing.assert_array_equal(x.cell[:], y.cell[:])
        np.testing.assert_array_equal(x.positions, z.positions)
        assert x.info["fold"] == y.info["fold"]
    # structures 0-2 are the ideal cells whatever the seed; the random ones depend on it
    assert any(len(x) != len(y) or not np.allclose(x.positions, y.positions) for x, y in zip(a[3:], c[3:]))


def test_shipped_data_matches_the_generator(generator, samples):
    """The committed tio2-diverse geometries are exactly build_structures(seed=0) (to the file's 8 decimals)."""
    stored = samples["tio2-diverse"]
    built = generator.build_structures(seed=0, n=int(stored[-1].info["index"]) + 1)
    for s in stored[:20]:
        b = built[int(s.info["index"])]
        assert s.symbols == b.get_chemical_symbols()
        np.testing.assert_allclose(s.positions, b.positions, atol=1e-6)
        np.testing.assert_allclose(s.cell, b.cell[:], atol=1e-6)
        assert s.info["fold"] == b.info["fold"] and s.info["phase"] == b.info["phase"]


def test_folding_divides_the_reference(generator):
    for phase, p in generator.PHASES.items():
        for repeat in p["repeats"]:
            fold = generator.fold_for(phase, repeat)
            assert tuple(r * f for r, f in zip(repeat, fold)) == tuple(p["reference"])
        cell = generator.conventional_cell(phase)
        assert cell.get_chemical_symbols().count("O") == 2 * cell.get_chemical_symbols().count("Ti")
