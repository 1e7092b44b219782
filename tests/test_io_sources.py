"""Data arguments: generate.in, XSF folder / glob / file, tar archives and ASE files, streamed one by one."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
import ase.io

from pyita.errors import InputError
from pyita.io import check_labels, open_source, read_structures
from pyita.io.xsf import read_xsf
from pyita.io.xsf_write import format_xsf
from pyita.structure import Structure


def labelled(k: int, n: int = 3, periodic: bool = True) -> Structure:
    rng = np.random.default_rng(k)
    return Structure(symbols=["Ti"] + ["O"] * (n - 1), positions=rng.uniform(0, 4, (n, 3)),
                     cell=np.diag([4.0, 4.5, 5.0]) if periodic else None, energy=-100.0 - k,
                     forces=rng.normal(0, 1, (n, 3)))


@pytest.fixture
def xsf_set(tmp_path) -> Path:
    folder = tmp_path / "xsf"
    folder.mkdir()
    for k in range(4):
        (folder / f"s{k}.xsf").write_text(format_xsf(labelled(k)))
    (folder / "notes.txt").write_text("not a structure")
    return folder


def gen_in(folder: Path, files: list[str]) -> Path:
    path = folder / "generate.in"
    path.write_text("OUTPUT x.train\nTYPES\n2\nTi -1.0\nO -2.0\nFILES\n" + f"{len(files)}\n" + "\n".join(files) + "\n")
    return path


def energies(source) -> list[float]:
    return [s.energy for s in source]


def test_folder_glob_file_and_generate_in_agree(xsf_set, tmp_path):
    expected = [-100.0, -101.0, -102.0, -103.0]
    assert energies(open_source(xsf_set)) == expected  # sorted *.xsf, the .txt ignored
    assert energies(open_source(str(xsf_set / "s*.xsf"))) == expected
    assert energies(open_source(xsf_set / "s2.xsf")) == [-102.0]
    gen = gen_in(tmp_path, ["xsf/s3.xsf", "xsf/s1.xsf"])
    source = open_source(gen)
    assert source.generate_in is not None and len(source) == 2
    assert energies(source) == [-103.0, -101.0]  # generate.in order, not sorted
    s = read_structures(xsf_set)[1]
    assert s.source == str(xsf_set / "s1.xsf")
    np.testing.assert_array_equal(s.positions, read_xsf(xsf_set / "s1.xsf").positions)


def test_generate_in_without_in_suffix_is_recognised(tmp_path, xsf_set):
    path = gen_in(tmp_path, ["xsf/s0.xsf"]).rename(tmp_path / "aenet-input")
    assert open_source(path).generate_in is not None


def test_sources_stream(xsf_set):
    source = open_source(xsf_set)
    iterator = iter(source)
    first = next(iterator)
    (xsf_set / "s3.xsf").write_text("garbage")  # not read yet: only the first file has been touched
    assert first.energy == -100.0
    next(iterator), next(iterator)
    with pytest.raises(InputError) as info:
        next(iterator)
    assert str(xsf_set / "s3.xsf") in str(info.value)


def test_extxyz_with_energies_and_forces(tmp_path):
    frames = []
    for k in range(3):
        s = labelled(k)
        atoms = s.to_ase()
        frames.append(atoms)
    path = tmp_path / "data.extxyz"
    ase.io.write(path, frames, format="extxyz")
    got = read_structures(path)
    assert [s.energy for s in got] == [-100.0, -101.0, -102.0]
    np.testing.assert_allclose(got[2].forces, labelled(2).forces, atol=1e-8)
    assert got[0].source == f"{path}[0]" and got[0].periodic


def test_ase_file_without_labels_is_rejected(tmp_path):
    path = tmp_path / "bare.extxyz"
    ase.io.write(path, Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]]), format="extxyz")
    with pytest.raises(InputError, match="no energy"):
        read_structures(path)
    assert read_structures(path, require_labels=False)[0].energy is None


def test_partially_periodic_ase_structure_is_rejected(tmp_path):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=[5, 5, 5], pbc=[True, True, False])
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    path = tmp_path / "slab.extxyz"
    ase.io.write(path, atoms, format="extxyz")
    with pytest.raises(InputError, match="partially periodic"):
        read_structures(path)


def test_unreadable_ase_file(tmp_path):
    path = tmp_path / "junk.extxyz"
    path.write_text("this is not\nan xyz file\n")
    with pytest.raises(InputError) as info:
        read_structures(path)
    assert str(path) in str(info.value)


def test_tar_archive_of_xsf(tmp_path, xsf_set):
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(xsf_set.glob("*.xsf")):
            tar.add(path, arcname=f"xsf/{path.name}")
    assert energies(open_source(archive)) == [-100.0, -101.0, -102.0, -103.0]


@pytest.mark.parametrize("spec, words", [
    ("missing-folder", ["no such file"]),
    ("nothing-matches-*.xsf", ["no files match"]),
])
def test_bad_specs(tmp_path, spec, words):
    with pytest.raises(InputError) as info:
        open_source(str(tmp_path / spec))
    for word in words:
        assert word in str(info.value)


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no .xsf files"):
        open_source(tmp_path)


def test_check_labels():
    s = labelled(0)
    assert check_labels(s) is s
    for change, words in (({"energy": None}, "no energy"), ({"energy": float("nan")}, "not finite"),
                          ({"forces": None}, "no forces")):
        with pytest.raises(InputError, match=words):
            check_labels(s.copy(**change))
    bad = s.copy()
    bad.forces[1, 2] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        check_labels(bad)
    derived = s.copy(forces=None, info={"derived": True})
    assert check_labels(derived) is derived  # derived structures need an energy only


def test_require_labels_through_a_source(tmp_path):
    s = labelled(0)
    s.forces = None
    (tmp_path / "nolabels.xsf").write_text(format_xsf(s))
    with pytest.raises(InputError, match="force"):
        read_structures(tmp_path)
    assert read_structures(tmp_path, require_labels=False)[0].forces is None


def test_match_names_by_path_from_the_list_folder_listed_text_or_bare_name(tmp_path, monkeypatch):
    from pyita.io import match_names

    (tmp_path / "data" / "xsf").mkdir(parents=True)
    (tmp_path / "lists").mkdir()
    files = [tmp_path / "data" / "xsf" / f"s{k}.xsf" for k in range(4)]
    for f in files:
        f.write_text("x")
    candidates = [[str(files[0])], [str(files[1]), "xsf/s1.xsf"], [str(files[2])], [str(files[3])]]
    monkeypatch.chdir(tmp_path / "lists")   # relative entries are not taken from here alone
    entries = ["../data/xsf/s0.xsf", "xsf/s1.xsf", "s2.xsf", "../data/xsf/missing.xsf", "nowhere.xsf"]
    hits, unmatched = match_names(entries, candidates, base=tmp_path / "lists")
    assert hits == {0, 1, 2}
    assert unmatched == ["../data/xsf/missing.xsf", "nowhere.xsf"]
    # the same list read from elsewhere: its own folder still decides
    monkeypatch.chdir(tmp_path)
    assert match_names(entries, candidates, base=tmp_path / "lists")[0] == {0, 1, 2}
