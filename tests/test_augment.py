"""Taylor augmentation: energies by hand, the three strategies' invariants, first-order accuracy on a real
potential, and the on-disk job (same structures as in memory, for any number of worker processes)."""

from __future__ import annotations

import csv
import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from pyita.augment import AugmentSettings, augment, iter_augmented
from pyita.augment.run import run_augment
from pyita.augment.strategies import DIRECTIONS, copies_for, draw_distinct
from pyita.errors import InputError, PyitaError
from pyita.io import open_source
from pyita.io.generate_in import read_generate_in
from pyita.io.xsf import DERIVED_MARK, read_xsf
from pyita.io.xsf_write import format_xsf
from pyita.parallel import usable_cores
from pyita.structure import Structure

UNIT = {"+x": (1, 0, 0), "+y": (0, 1, 0), "+z": (0, 0, 1), "-x": (-1, 0, 0), "-y": (0, -1, 0), "-z": (0, 0, -1)}


def toy(k: int = 0, n: int = 4, periodic: bool = True) -> Structure:
    rng = np.random.default_rng(100 + k)
    return Structure(symbols=(["Ti", "O", "O"] * n)[:n], positions=rng.uniform(0, 5, (n, 3)),
                     cell=np.diag([5.0, 5.5, 6.0]) if periodic else None, energy=-50.0 - k,
                     forces=rng.normal(0, 1, (n, 3)), source=f"toy{k}.xsf")


def moves_of(derived):
    return [(d.info["parent"], d.info["atom"], d.info["direction"]) for d in derived]


def displacement(child: Structure, parents) -> np.ndarray:
    return child.positions - parents[child.info["parent"]].positions


# --------------------------------------------------------------------------------------------- energies

def test_taylor_energies_by_hand():
    parent = Structure(symbols=["Cu", "Cu"], positions=[[0, 0, 0], [1.8, 1.8, 0]], cell=np.eye(3) * 3.6,
                       energy=-10.0, forces=[[0.5, -1.0, 2.0], [3.0, 0.25, -0.75]])
    derived = augment([parent], a=8, delta=0.01, strategy="sequential")
    # E' = E − F·D, worked out by hand for atom 1 (F = 0.5, −1, 2) then atom 2 (F = 3, 0.25, −0.75)
    by_hand = [-10.0 - 0.005, -10.0 + 0.01, -10.0 - 0.02, -10.0 + 0.005, -10.0 - 0.01, -10.0 + 0.02,
               -10.0 - 0.03, -10.0 - 0.0025]
    assert [d.energy for d in derived] == pytest.approx(by_hand, abs=1e-12)
    for d in derived:
        assert d.forces is None and d.info["strategy"] == "sequential"
        assert d.info["taylor_shift"] == pytest.approx(d.energy + 10.0, abs=1e-15)
        np.testing.assert_array_equal(d.cell, parent.cell)


def test_random_all_energies_by_hand():
    parents = [toy(0), toy(1, n=6)]
    for d in augment(parents, a=3, delta=0.02, strategy="random-all", seed=5):
        p = parents[d.info["parent"]]
        D = d.positions - p.positions
        shift = 0.0
        for i in range(len(p)):
            for axis in range(3):
                shift += p.forces[i][axis] * D[i][axis]
        assert d.energy == pytest.approx(p.energy - shift, abs=1e-12)


# ------------------------------------------------------------------------------------------- sequential

def test_sequential_order_and_stop():
    parents = [toy(0, n=3), toy(1, n=3)]
    derived = augment(parents, a=10, delta=0.03, strategy="sequential")
    assert len(derived) == 20  # a·N
    expected = [(0, atom, direction) for atom in range(3) for direction in DIRECTIONS] + [(1, 0, "+x"), (1, 0, "+y")]
    assert moves_of(derived) == expected
    assert list(DIRECTIONS) == ["+x", "+y", "+z", "-x", "-y", "-z"]
    for k, d in enumerate(derived):
        D = displacement(d, parents)
        moved = np.flatnonzero(np.abs(D).sum(axis=1))
        assert moved.tolist() == [d.info["atom"]]
        np.testing.assert_allclose(D[d.info["atom"]], 0.03 * np.array(UNIT[d.info["direction"]]), atol=1e-14)
        assert d.info["copy"] == (k if k < 18 else k - 18)


def test_sequential_concentrates_on_the_first_parents():
    parents = [toy(k, n=5) for k in range(20)]
    derived = augment(parents, a=4, delta=0.03, strategy="sequential")
    assert len(derived) == 80
    assert Counter(d.info["parent"] for d in derived) == {0: 30, 1: 30, 2: 20}


def test_sequential_when_a_times_n_exceeds_six_per_atom():
    parent = toy(0, n=2)
    with pytest.warns(UserWarning, match="8 fewer"):
        derived = augment([parent], a=20, delta=0.03, strategy="sequential")
    assert len(derived) == 12  # 6 × 2 atoms, all distinct
    assert len(set(moves_of(derived))) == 12


def test_sequential_needs_the_parent_count():
    settings = AugmentSettings(a=1, delta=0.03, strategy="sequential")
    with pytest.raises(ValueError):
        list(iter_augmented([toy()], settings))


# --------------------------------------------------------------------------------------------- balanced

def test_balanced_exactly_a_per_parent_with_distinct_moves():
    parents = [toy(k, n=4) for k in range(6)]
    derived = augment(parents, a=5, delta=0.03, strategy="balanced", seed=1)
    per_parent = Counter(d.info["parent"] for d in derived)
    assert per_parent == {k: 5 for k in range(6)}
    for k in range(6):
        pairs = [(d.info["atom"], d.info["direction"]) for d in derived if d.info["parent"] == k]
        assert len(set(pairs)) == 5
        assert [d.info["copy"] for d in derived if d.info["parent"] == k] == list(range(5))
    for d in derived:
        D = displacement(d, parents)
        np.testing.assert_allclose(D[d.info["atom"]], 0.03 * np.array(UNIT[d.info["direction"]]), atol=1e-14)
        assert np.count_nonzero(np.abs(D).sum(axis=1)) == 1


def test_balanced_seeds_reproduce_and_differ():
    parents = [toy(k, n=6) for k in range(8)]
    a = moves_of(augment(parents, 3, 0.03, "balanced", seed=7))
    assert a == moves_of(augment(parents, 3, 0.03, "balanced", seed=7))
    b = moves_of(augment(parents, 3, 0.03, "balanced", seed=8))
    assert a != b
    # and every parent's choice differs between seeds for most parents, not just one
    assert sum(x != y for x, y in zip(a, b)) > len(a) // 2


def test_balanced_a_beyond_six_per_atom_gives_every_move_once():
    parent = toy(0, n=3)
    derived = augment([parent], a=30, delta=0.03, strategy="balanced")
    assert sorted(moves_of(derived)) == sorted((0, atom, d) for atom in range(3) for d in DIRECTIONS)


def test_non_integer_a_spreads_evenly():
    parents = [toy(k, n=4) for k in range(7)]
    derived = augment(parents, a=1.5, delta=0.03, strategy="balanced")
    counts = Counter(d.info["parent"] for d in derived)
    assert sum(counts.values()) == 10  # floor(1.5 × 7)
    assert set(counts[k] for k in range(7)) <= {1, 2}
    for n in range(1, 30):  # every prefix has floor(a·n)
        assert sum(copies_for(k, 2.3) for k in range(n)) == int(2.3 * n + 1e-9)


def test_draw_distinct_is_uniform_over_subsets():
    counts = Counter(tuple(sorted(draw_distinct(5, 2, (0, k)))) for k in range(20000))
    assert len(counts) == 10
    assert max(counts.values()) < 2200 and min(counts.values()) > 1800  # 2000 each ± 4.5σ
    assert draw_distinct(4, 9, (1, 1)) and sorted(draw_distinct(4, 9, (1, 1))) == [0, 1, 2, 3]
    assert draw_distinct(10, 3, (1, 2)) == draw_distinct(10, 3, (1, 2))
    seeds = [draw_distinct(50, 4, (seed, 2)) for seed in range(20)]
    assert len({tuple(x) for x in seeds}) == 20  # different seeds, different draws


# ------------------------------------------------------------------------------------------- random-all

def test_random_all_invariants():
    parents = [toy(k, n=n) for k, n in enumerate((2, 5, 9, 24))]
    delta, cap = 0.03, 2.0
    derived = augment(parents, a=4, delta=delta, strategy="random-all", seed=3, cap=cap)
    assert Counter(d.info["parent"] for d in derived) == {0: 4, 1: 4, 2: 4, 3: 4}
    for d in derived:
        D = displacement(d, parents)
        np.testing.assert_allclose(D.sum(axis=0), 0.0, atol=1e-13)  # no net translation
        assert np.sqrt(np.mean(np.sum(D * D, axis=1))) == pytest.approx(delta, rel=1e-9)  # RMS exactly δ
        assert np.linalg.norm(D, axis=1).max() <= cap * delta + 1e-12
        assert np.count_nonzero(np.linalg.norm(D, axis=1) > 0) == len(D)  # every atom moves
        assert d.info["atom"] == -1 and d.info["direction"] == "all"


def test_random_all_seeds_reproduce_and_differ():
    parents = [toy(k, n=5) for k in range(3)]
    one = augment(parents, 2, 0.01, "random-all", seed=11)
    two = augment(parents, 2, 0.01, "random-all", seed=11)
    other = augment(parents, 2, 0.01, "random-all", seed=12)
    for x, y, z in zip(one, two, other):
        np.testing.assert_array_equal(x.positions, y.positions)
        assert not np.allclose(x.positions, z.positions)


def test_random_all_tight_cap_and_single_atoms():
    with pytest.raises(PyitaError, match="cap"):
        augment([toy(0, n=2)], 1, 0.03, "random-all", cap=1.2)  # two atoms: each moves exactly δ·√2
    single = toy(0, n=1, periodic=False)
    assert augment([single], 3, 0.03, "random-all") == []


# ------------------------------------------------------------------------------- exclusion, force limits

@pytest.mark.parametrize("strategy", ["sequential", "balanced", "random-all"])
def test_excluded_parents_are_never_augmented(strategy):
    parents = [toy(k, n=3) for k in range(6)]
    derived = augment(parents, a=2, delta=0.03, strategy=strategy, exclude=[0, 3, 4])
    assert {d.info["parent"] for d in derived} <= {1, 2, 5}
    assert len(derived) == 6  # a × the 3 parents that remain


def test_max_force_skips_atoms_and_parents():
    parent = toy(0, n=4)
    parent.forces[:] = [[0.1, 0, 0], [5.0, 0, 0], [0, 0.2, 0], [0, 0, 9.0]]
    calm = toy(1, n=4)
    calm.forces[:] = 0.1
    with pytest.warns(UserWarning, match="12 fewer"):
        derived = augment([parent], a=24, delta=0.03, strategy="sequential", max_force=1.0)
    assert {d.info["atom"] for d in derived} == {0, 2} and len(derived) == 12
    for strategy in ("sequential", "balanced"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            derived = augment([parent], a=24, delta=0.03, strategy=strategy, max_force=1.0)
        assert {d.info["atom"] for d in derived} == {0, 2}
        assert len(derived) == 12  # 6 directions × the two calm atoms
    derived = augment([parent, calm], a=2, delta=0.03, strategy="random-all", max_force=1.0)
    assert {d.info["parent"] for d in derived} == {1}


def test_derived_structures_are_not_augmented_again():
    parents = [toy(0), toy(1)]
    first = augment(parents, a=1, delta=0.03, strategy="balanced")
    again = augment([*parents, *first], a=1, delta=0.03, strategy="balanced")
    assert {d.info["parent"] for d in again} == {0, 1}


# ------------------------------------------------------------------------------------- stream ordering

@pytest.mark.parametrize("strategy", ["balanced", "random-all"])
def test_subset_gives_the_same_derived_structures(strategy):
    parents = [toy(k, n=4 + k % 3) for k in range(10)]
    full = augment(parents, a=3, delta=0.02, strategy=strategy, seed=4)
    part = augment(parents[:6], a=3, delta=0.02, strategy=strategy, seed=4)
    assert len(part) == 18
    for x, y in zip(part, [d for d in full if d.info["parent"] < 6]):
        assert x.info == y.info and x.energy == y.energy
        np.testing.assert_array_equal(x.positions, y.positions)


def test_streaming_consumes_parents_one_at_a_time():
    seen = []

    def parents():
        for k in range(5):
            seen.append(k)
            yield toy(k)

    settings = AugmentSettings(a=2, delta=0.03, strategy="balanced")
    stream = iter_augmented(parents(), settings)
    index, parent, derived = next(stream)
    assert index == 0 and seen == [0] and len(derived) == 2


# --------------------------------------------------------------------------------------------- settings

@pytest.mark.parametrize("kwargs, words", [
    ({"a": 1, "delta": 0.0}, "delta must be > 0"), ({"a": 1, "delta": -0.01}, "delta must be > 0"),
    ({"a": -1, "delta": 0.03}, "≥ 0"), ({"a": 1, "delta": 2.0}, "far beyond"),
    ({"a": 1, "delta": 0.03, "strategy": "clever"}, "unknown strategy"),
    ({"a": 1, "delta": 0.03, "max_force": 0}, "max-force"), ({"a": 1, "delta": 0.03, "cap": 0.5}, "cap"),
    ({"a": float("nan"), "delta": 0.03}, "≥ 0"),
])
def test_settings_are_checked(kwargs, words):
    with pytest.raises(PyitaError, match=words):
        AugmentSettings(**kwargs)


def test_large_delta_warns():
    with pytest.warns(UserWarning, match="large"):
        AugmentSettings(a=1, delta=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AugmentSettings(a=1, delta=0.05)


def test_parents_without_labels_are_refused():
    bad = toy(0)
    bad.forces = None
    with pytest.raises(InputError, match="no forces"):
        augment([bad], 1, 0.03)


# ------------------------------------------------------------------------- first order on a real potential

def emt_parent() -> tuple[Structure, object]:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(stdev=0.05, seed=2)
    atoms.calc = EMT()
    parent = Structure(symbols=atoms.get_chemical_symbols(), positions=atoms.get_positions(),
                       cell=np.array(atoms.cell), energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    return parent, atoms


def taylor_errors(strategy: str, delta: float) -> np.ndarray:
    parent, atoms = emt_parent()
    errors = []
    for d in augment([parent], a=12, delta=delta, strategy=strategy, seed=9):
        probe = atoms.copy()
        probe.positions = d.positions
        probe.calc = EMT()
        errors.append(abs(d.energy - probe.get_potential_energy()))
    return np.array(errors)


@pytest.mark.parametrize("strategy", ["balanced", "random-all"])
def test_first_order_error_drops_fourfold_when_delta_halves(strategy):
    big, small = taylor_errors(strategy, 0.02), taylor_errors(strategy, 0.01)
    ratio = big.mean() / small.mean()
    assert 3.0 < ratio < 5.0, ratio
    assert small.mean() / 32 < 1e-3  # and the labels are good to better than 1 meV/atom here


# ------------------------------------------------------------------------------------------- on disk

def write_set(folder: Path, parents) -> Path:
    (folder / "xsf").mkdir(parents=True)
    names = []
    for k, p in enumerate(parents):
        names.append(f"xsf/p{k:02d}.xsf")
        (folder / names[-1]).write_text(format_xsf(p))
    gen = folder / "generate.in"
    gen.write_text("OUTPUT  toy.train\n\nTYPES\n2\nTi -1600.0\nO -430.0\n\nSETUPS\nTi Ti.stp\nO O.stp\n\n"
                   f"FILES\n{len(names)}\n" + "\n".join(names) + "\n")
    return gen


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("strategy", ["sequential", "balanced", "random-all"])
def test_disk_output_matches_memory_for_any_number_of_workers(tmp_path, strategy, monkeypatch):
    parents = [toy(k, n=3 + k % 4) for k in range(12)]
    gen = write_set(tmp_path / "in", parents)
    settings = AugmentSettings(a=3, delta=0.03, strategy=strategy, seed=2)
    monkeypatch.setattr("pyita.augment.workers.CHUNK", 4)   # several chunks, so that two workers get work
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        summary = run_augment(gen, out, settings, progress=False, workers=workers)
        assert summary["counts"]["derived"] == 36 and summary["workers"] == min(workers, usable_cores())
        runs[workers] = tree(out)
    run_json = [json.loads(runs[w].pop("run.json")) for w in (1, 2)]
    assert runs[1] == runs[2]  # byte for byte
    assert run_json[0]["settings"] == run_json[1]["settings"]
    # the files hold the structures augment() makes in memory (read back from the parents' files)
    on_disk_parents = [read_xsf(tmp_path / "in" / "xsf" / f"p{k:02d}.xsf") for k in range(12)]
    expected = augment(on_disk_parents, a=3, delta=0.03, strategy=strategy, seed=2)
    rows = list(csv.DictReader((tmp_path / "out1" / "manifest.csv").open()))
    assert len(rows) == len(expected) == 36
    for row, child in zip(rows, expected):
        got = read_xsf(tmp_path / "out1" / row["file"])
        assert got.info["derived"] and got.forces is None
        assert abs(got.energy - child.energy) <= 5.1e-11
        assert float(row["energy_eV"]) == pytest.approx(child.energy, abs=5.1e-11)
        np.testing.assert_allclose(got.positions, child.positions, rtol=0, atol=5.1e-11)
        parent = on_disk_parents[int(row["parent_index"])]
        np.testing.assert_array_equal(got.info["placeholder_forces"], parent.forces)
        assert got.comments[0] == f"{DERIVED_MARK} {parent.source}"
        assert int(row["copy"]) == child.info["copy"]


def test_disk_derived_files_keep_unmoved_parent_lines(tmp_path, tio2_xsf_dir):
    """Single-atom moves: every line of the parent's cell and atoms is kept as written, but the moved one."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("structure0001.xsf", "structure0100.xsf"):
        (folder / name).write_text((tio2_xsf_dir / name).read_text())
    out = tmp_path / "out"
    run_augment(folder, out, AugmentSettings(a=3, delta=0.03), progress=False, workers=1)
    for row in csv.DictReader((out / "manifest.csv").open()):
        parent_lines = Path(row["parent"]).read_text().splitlines()[2:]
        child_lines = (out / row["file"]).read_text().splitlines()
        child_lines = child_lines[child_lines.index("") + 1:]
        atom = int(row["atom"])
        changed = [k for k, (x, y) in enumerate(zip(parent_lines, child_lines)) if x != y]
        assert changed == [6 + atom]  # CRYSTAL, PRIMVEC, 3 vectors, PRIMCOORD, "N 1", then atom lines


def test_disk_exclude_file(tmp_path):
    parents = [toy(k) for k in range(5)]
    gen = write_set(tmp_path / "in", parents)
    exclude = tmp_path / "test-split.txt"
    exclude.write_text("# test structures\nxsf/p01.xsf\np03.xsf\n")  # as in generate.in, and a bare name
    out = tmp_path / "out"
    summary = run_augment(gen, out, AugmentSettings(a=2, delta=0.03), exclude_file=exclude, progress=False)
    assert summary["counts"]["excluded"] == 2 and summary["counts"]["derived"] == 6
    parents_used = {row["parent"] for row in csv.DictReader((out / "manifest.csv").open())}
    assert {Path(p).name for p in parents_used} == {"p00.xsf", "p02.xsf", "p04.xsf"}
    gen_out = read_generate_in(out / "generate.in")
    assert len(gen_out.files) == 5 + 6  # excluded parents are still listed (they stay training data)


def test_disk_error_leaves_nothing(tmp_path):
    parents = [toy(k) for k in range(40)]
    gen = write_set(tmp_path / "in", parents)
    bad = tmp_path / "in" / "xsf" / "p30.xsf"
    bad.write_text("\n".join(bad.read_text().splitlines()[:-1]) + "\n")  # truncated: one atom short
    for workers in (1, 2):
        with pytest.raises(InputError) as info:
            run_augment(gen, tmp_path / "out", AugmentSettings(a=2, delta=0.03), progress=False,
                        workers=workers)
        assert str(bad) in str(info.value) and info.value.line is not None
        assert not (tmp_path / "out").exists()
        assert [p.name for p in tmp_path.iterdir()] == ["in"]


@pytest.mark.tio2
def test_sequential_on_real_tio2_uses_only_the_first_parents(tio2_xsf_dir):
    """method.md: with a = 4 on the 7815 TiO2 structures all derived ones come from the first ~250."""
    settings = AugmentSettings(a=4, delta=0.03, strategy="sequential")
    source = open_source(tio2_xsf_dir)
    used, total = 0, 0
    for _, _, derived in iter_augmented(source, settings, len(source)):
        used += bool(derived)
        total += len(derived)
    assert total == 31260 and 150 < used < 300


def test_species_missing_from_types_is_an_error(tmp_path):
    parents = [toy(0), toy(1)]
    parents[1].symbols[0] = "Zr"
    gen = write_set(tmp_path / "in", parents)
    with pytest.raises(InputError) as info:
        run_augment(gen, tmp_path / "out", AugmentSettings(a=1, delta=0.03), progress=False)
    assert "Zr" in str(info.value) and str(gen) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_parents_from_an_ase_file_are_written_as_xsf(tmp_path):
    import ase.io

    parents = [toy(k) for k in range(3)]
    path = tmp_path / "set.extxyz"
    ase.io.write(path, [p.to_ase() for p in parents], format="extxyz")
    out = tmp_path / "out"
    summary = run_augment(path, out, AugmentSettings(a=2, delta=0.03), progress=False)
    assert summary["counts"]["derived"] == 6
    gen = read_generate_in(out / "generate.in")  # every entry exists, relative to the output folder
    assert [f for f in gen.files if f.startswith("parents/")] == ["parents/set-00000.xsf", "parents/set-00001.xsf",
                                                                 "parents/set-00002.xsf"]
    again = read_xsf(out / "parents" / "set-00001.xsf", require_labels=True)
    assert again.energy == pytest.approx(parents[1].energy, abs=1e-9)
    np.testing.assert_allclose(again.forces, parents[1].forces, atol=1e-7)  # extxyz keeps 8 decimals
    assert set(gen.types) == {"Ti", "O"}


@pytest.mark.tio2
def test_real_subset_of_1000_on_disk(tio2_subset_1000, tmp_path):
    gen = tmp_path / "generate.in"
    gen.write_text("OUTPUT TiO.train\nTYPES\n2\nTi -1626.66972707\nO -433.23448532\nSETUPS\nTi Ti.stp\nO O.stp\n"
                   f"FILES\n{len(tio2_subset_1000)}\n" + "".join(f"{p}\n" for p in tio2_subset_1000))
    out = tmp_path / "out"
    summary = run_augment(gen, out, AugmentSettings(a=1, delta=0.03, seed=3), progress=False, workers=1)
    assert summary["counts"] == {"parents": 1000, "excluded": 0, "augmented_parents": 1000, "derived": 1000}
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 1000 and len(read_generate_in(out / "generate.in").files) == 2000
    for row in rows[::50]:
        parent, child = read_xsf(row["parent"]), read_xsf(out / row["file"], require_labels=True)
        k, axis = int(row["atom"]) - 1, "xyz".index(row["direction"][1])
        sign = 1.0 if row["direction"][0] == "+" else -1.0
        assert child.energy == pytest.approx(parent.energy - sign * 0.03 * parent.forces[k, axis], abs=5.1e-11)
