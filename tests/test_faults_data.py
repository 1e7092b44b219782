"""Data that hangs or crashes a command, or is silently wrong (issue 22, classes 9–12): non-regular files among
the data, geometry the neighbour list cannot take, worker counts far above the work, and duplicated
structures. Crashes and hangs are tried in CLI subprocesses with a timeout, so they fail the test rather than
the test run."""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from faults import error_line, make_case, nothing_written, run_cli, rutile, tree_hashes, warning_lines
from pyita.errors import PyitaError
from pyita.model.load import load_potential
from pyita.parallel import plan_workers, usable_cores


@pytest.fixture
def case(tmp_path) -> Path:
    """tmp_path/case/generate.in + xsf/ (six rutile cells of six atoms)."""
    return make_case(tmp_path / "case").parent


# --- class 11: worker counts --------------------------------------------------------------------------------

def test_workers_are_capped_at_the_work_and_the_cores():
    assert plan_workers(1000, 3) == min(3, usable_cores())
    assert plan_workers(1000, 10**6) == usable_cores()
    assert plan_workers(4, 0) == 1          # nothing to do: no pool worth starting
    assert plan_workers(1, 50) == 1
    with pytest.raises(PyitaError, match="--workers"):
        plan_workers(0, 3)


def test_augment_with_a_thousand_workers_starts_one_per_chunk(case):
    result = run_cli("augment", "generate.in", "--a", 1, "--delta", 0.03, "--workers", 1000, "-q",
                     "--out", "../aug", cwd=case, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads((case.parent / "aug" / "run.json").read_text())["workers"] == 1   # six parents: one chunk


# --- class 9: FIFOs, devices, symbolic-link loops -----------------------------------------------------------

AUGMENT = ["--a", 1, "--delta", 0.03, "-q"]


def refused(case: Path, data: str, *words: str) -> None:
    """``pyita augment data`` in ``case`` ends within the timeout: exit 2, one line, nothing written."""
    before = tree_hashes(case)
    error_line(run_cli("augment", data, *AUGMENT, "--out", "../aug", cwd=case, timeout=60), *words)
    assert tree_hashes(case) == before
    nothing_written(case.parent, "aug")


@pytest.mark.parametrize("data", ["xsf", "xsf/*.xsf", "**/*.xsf"])
def test_a_fifo_among_the_xsf_files_is_refused_not_read(case, data):
    os.mkfifo(case / "xsf" / "s02b.xsf")
    refused(case, data, "s02b.xsf", "FIFO", "not a regular file")


@pytest.mark.parametrize("name", ["zero.extxyz", "zero.xsf", "zero.in", "zero.tar.gz"])
def test_a_link_to_dev_zero_given_as_data_is_refused(case, name):
    (case / name).symlink_to("/dev/zero")
    refused(case, name, name, "character device")


def test_a_fifo_given_as_data_is_refused(case):
    os.mkfifo(case / "pipe.extxyz")
    refused(case, "pipe.extxyz", "pipe.extxyz", "FIFO")


def test_a_generate_in_listing_a_device_is_refused(case):
    (case / "xsf" / "zero.xsf").symlink_to("/dev/zero")
    gen = case / "generate.in"
    gen.write_text(gen.read_text().replace("xsf/s05.xsf", "xsf/zero.xsf"))
    refused(case, "generate.in", "generate.in", "xsf/zero.xsf", "character device")


def test_a_recursive_glob_through_a_symbolic_link_loop_ends(case):
    (case / "xsf" / "up").symlink_to("..")
    (case / "xsf" / "again").symlink_to("..")   # two loops: Python's glob would branch without end
    result = run_cli("augment", "**/*.xsf", *AUGMENT, "--out", "../aug", cwd=case, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads((case.parent / "aug" / "run.json").read_text())["counts"]["parents"] == 6


def _archive(path: Path, members, others=()) -> Path:
    """A tar.gz of ``members`` (name, bytes), regular files in this order, and ``others`` (name, tar type)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for name, kind in others:
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info)
    return path


def test_archive_members_that_are_not_files_are_left_out_with_a_warning(case):
    files = sorted((case / "xsf").glob("*.xsf"))
    _archive(case / "set.tar.gz", [(f"xsf/{p.name}", p.read_bytes()) for p in files],
             [("xsf/pipe.xsf", tarfile.FIFOTYPE), ("xsf/dev.xsf", tarfile.CHRTYPE)])
    result = run_cli("augment", "set.tar.gz", *AUGMENT, "--out", "../aug", cwd=case, timeout=60)
    assert result.returncode == 0, result.stderr
    assert any("not regular files" in line and "2 members" in line for line in warning_lines(result)), \
        result.stderr
    assert json.loads((case.parent / "aug" / "run.json").read_text())["counts"]["parents"] == 6


def test_recursive_glob_finds_what_pythons_glob_finds_without_links(tmp_path, monkeypatch):
    import glob

    from pyita.io.files import glob_paths

    for name in ("a.xsf", "d/b.xsf", "d/e/c.xsf", "d/.hidden/h.xsf", ".x/y.xsf", "d/e/f/g.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    for pattern in ("**/*.xsf", "d/**/*.xsf", "d/**", "*/**/c.xsf", "**/e/**/*", f"{tmp_path}/**/*.xsf"):
        assert sorted(glob_paths(pattern)) == sorted(glob.glob(pattern, recursive=True)), pattern


# --- class 10: geometry the neighbour search cannot take ----------------------------------------------------

SMALL_MODEL = ["--radial-rc", 4.0, "--radial-n", 3, "--angular-rc", 3.5, "--angular-n", 2, "--hidden", "3:tanh",
               "--iterations", 1, "--test-fraction", 0, "-q"]


def _extxyz(path: Path, structures) -> Path:
    import ase.io

    ase.io.write(path, [s.to_ase() for s in structures], format="extxyz")
    return path


def _far_atom():
    from pyita.structure import Structure

    molecule = rutile(6)
    molecule.positions[0, 0] += 1e6   # one atom 1e6 Å away: SIGFPE inside vesin on the unchecked code
    return Structure(symbols=molecule.symbols, positions=molecule.positions, cell=None, energy=molecule.energy,
                     forces=molecule.forces)


def _tiny_cell():
    cell = rutile(6)
    cell.positions, cell.cell = cell.positions * 0.1 / 4.6, cell.cell * 0.1 / 4.6
    return cell


@pytest.mark.parametrize("broken, words", [(_far_atom, ["1e+06 Å across", "far from the others"]),
                                           (_tiny_cell, ["neighbours per atom", "far too small"])])
def test_geometry_that_crashes_the_neighbour_search_is_refused_first(tmp_path, broken, words):
    data = _extxyz(tmp_path / "data.extxyz", [rutile(k) for k in range(5)] + [broken()])
    result = run_cli("train", "data.extxyz", *SMALL_MODEL, "--no-cache", "--out", "m.pt", cwd=tmp_path, timeout=120)
    error_line(result, "data.extxyz[5]", *words)   # not SIGFPE / a segmentation fault
    assert not (tmp_path / "m.pt").exists() and data.exists()


# --- class 12: one structure twice ---------------------------------------------------------------------------

def _split(prep: Path) -> dict[str, set[tuple[str, str]]]:
    """The (energy, n_atoms) of the structures in each role of `aenet prepare`'s structures.csv."""
    import csv

    roles: dict[str, set] = {}
    with open(prep / "structures.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            roles.setdefault(row["role"], set()).add((row["energy_eV"], row["n_atoms"]))
    return roles


@pytest.mark.parametrize("how", ["same path", "same content"])
def test_a_structure_listed_twice_is_read_once_and_never_on_both_sides_of_the_split(case, how):
    gen = case / "generate.in"
    if how == "same path":
        again = "xsf/../xsf/s01.xsf"
    else:
        again = "xsf/copy-of-s01.xsf"
        (case / again).write_bytes((case / "xsf" / "s01.xsf").read_bytes())
    gen.write_text(gen.read_text().replace("FILES\n6\n", f"FILES\n7\n{again}\n"))
    for seed in (1, 3):   # seeds that put the copy on the other side of the split on the unchecked code
        out = f"../prep{seed}"
        result = run_cli("aenet", "prepare", "generate.in", "--test-fraction", 0.5, "--seed", seed, "-q",
                         "--out", out, cwd=case, timeout=120)
        assert result.returncode == 0, result.stderr
        assert any("s01.xsf" in line for line in warning_lines(result)), result.stderr
        roles = _split(case / out)
        assert not roles["train"] & roles["test"], roles
        assert sum(map(len, roles.values())) == 6


def test_archive_members_of_one_name_are_refused(case):
    files = sorted((case / "xsf").glob("*.xsf"))
    _archive(case / "set.tar.gz", [(f"xsf/{p.name}", p.read_bytes()) for p in files] +
             [("xsf/s01.xsf", files[4].read_bytes())])
    refused(case, "set.tar.gz", "set.tar.gz", "two members are named 'xsf/s01.xsf'")


def test_train_never_tests_on_a_copy_of_a_training_structure(case, tmp_path):
    from pyita.train.run import run_train
    from pyita.train.settings import TrainSettings

    (case / "xsf" / "copy-of-s01.xsf").write_bytes((case / "xsf" / "s01.xsf").read_bytes())
    gen = case / "generate.in"
    gen.write_text(gen.read_text().replace("FILES\n6\n", "FILES\n7\nxsf/copy-of-s01.xsf\n"))
    settings = TrainSettings.from_flat(iterations=1, hidden="3:tanh", descriptor={"radial_rc": 4.0, "radial_n": 3,
                                                                                   "angular_rc": 3.5, "angular_n": 2})
    dropped = 0
    for seed in range(4):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = run_train(str(gen), tmp_path / f"m{seed}.pt",
                                replace(settings, seed=seed), test_fraction=0.5, use_cache=False,
                                progress=False)
        pair_in_test = [s for s in load_potential(tmp_path / f"m{seed}.pt").metadata["test_sources"]
                        if Path(s).name in ("s01.xsf", "copy-of-s01.xsf")]
        total = sum(summary["counts"][k] for k in ("train", "validation", "test"))
        assert len(pair_in_test) <= 1 and (total == 6 if pair_in_test else total in (6, 7)), (seed, pair_in_test)
        if total == 6:   # one copy left the test set, and said so
            dropped += 1
            assert any("copy-of-s01.xsf" in str(w.message) or "s01.xsf" in str(w.message) for w in caught)
    assert dropped, "no seed put the two copies on different sides; choose other seeds"
