"""`pyita augment` as users run it: a real subprocess, end to end, and every kind of bad input giving exit
status 2, one clear error line (file and line), no traceback, nothing written and the inputs untouched."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

import pyita
from pyita.io.generate_in import read_generate_in
from pyita.io.xsf import read_xsf
from pyita.io.xsf_write import format_xsf
from pyita.structure import Structure

TIO2_NAMES = ["structure0001.xsf", "structure0002.xsf", "structure0005.xsf", "structure0007.xsf",
              "structure0012.xsf", "structure0100.xsf"]


def run_cli(*args, cwd: Path, script: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    command = ["pyita"] if script else [sys.executable, "-m", "pyita.cli"]
    return subprocess.run([*command, *map(str, args)], cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def dataset(tmp_path, request) -> Path:
    """tmp_path/data/generate.in listing xsf/*.xsf: six real TiO2 files when present, else synthetic ones."""
    data = tmp_path / "data"
    (data / "xsf").mkdir(parents=True)
    try:
        source = request.getfixturevalue("tio2_xsf_dir")
    except pytest.skip.Exception:
        source = None
    names = []
    for k, name in enumerate(TIO2_NAMES):
        if source is not None:
            shutil.copy(source / name, data / "xsf" / name)
        else:
            rng = np.random.default_rng(k)
            s = Structure(symbols=["Ti", "Ti", "O", "O", "O", "O"], positions=rng.uniform(0, 4.6, (6, 3)),
                          cell=np.diag([4.6, 4.6, 2.96]), energy=-4985.0 - k, forces=rng.normal(0, 0.5, (6, 3)))
            (data / "xsf" / name).write_text(format_xsf(s))
        names.append(f"xsf/{name}")
    (data / "generate.in").write_text(
        "OUTPUT  TiO.train\n\nTYPES\n2\nTi  -1626.66972707   | eV\nO    -433.23448532   | eV\n\n"
        "SETUPS\nTi   Ti.stp\nO    O.stp\n\n" + f"FILES\n{len(names)}\n" + "\n".join(names) + "\n")
    return data / "generate.in"


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_clean_failure(result, tmp_path: Path, before: dict, *words: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary folder left
    assert hashes(tmp_path / "data") == before  # inputs unmodified
    return lines[0]


# -------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, words", [
    (["--a", "2", "--delta", "0"], ["delta must be > 0"]),
    (["--a", "2", "--delta=-0.05"], ["delta must be > 0"]),
    (["--a=-1", "--delta", "0.03"], ["≥ 0"]),
    (["--a", "2", "--delta", "5"], ["far beyond"]),
    (["--a", "2", "--delta", "0.03", "--strategy", "clever"], ["'--strategy': 'clever' is not one of"]),
])
def test_bad_settings(tmp_path, dataset, args, words):
    before = hashes(tmp_path / "data")
    result = run_cli("augment", "data/generate.in", *args, "--out", "out", cwd=tmp_path)
    assert_clean_failure(result, tmp_path, before, *words)


def test_missing_input(tmp_path, dataset):
    before = hashes(tmp_path / "data")
    result = run_cli("augment", "data/nothing.in", "--a", "2", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    assert_clean_failure(result, tmp_path, before, "data/nothing.in", "no such file")


@pytest.mark.parametrize("edit, words", [
    (lambda t: t.replace("FILES\n6\n", "FILES\n7\n"), ["generate.in, line 13", "announces 7 files but lists 6"]),
    (lambda t: t.replace("FILES\n6\n", "FILES\n5\n"), ["generate.in, line 19", "more are listed"]),
    (lambda t: t.replace("FILES", "files"), ["generate.in, line 12", "upper case"]),
    (lambda t: t.replace("xsf/structure0005.xsf", "xsf/structure9999.xsf"), ["generate.in, line 16",
                                                                             "structure9999.xsf"]),
])
def test_bad_generate_in(tmp_path, dataset, edit, words):
    dataset.write_text(edit(dataset.read_text()))
    before = hashes(tmp_path / "data")
    result = run_cli("augment", "data/generate.in", "--a", "2", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    assert_clean_failure(result, tmp_path, before, *words)


def damage(path: Path, how: str) -> int:
    """Break one XSF file; returns the line the error must name."""
    lines = path.read_text().splitlines()
    first_atom = next(k for k, ln in enumerate(lines) if ln.strip() == "PRIMCOORD") + 2
    if how == "truncated":
        path.write_text("\n".join(lines[:first_atom + 2]) + "\n")
        return first_atom + 2  # the last line present: the file ends where atom 3 was expected
    if how == "nan":
        fields = lines[first_atom + 1].split()
        fields[5] = "NaN"
        lines[first_atom + 1] = " ".join(fields)
    elif how == "Total Energy":
        lines[0] = lines[0].replace("total energy", "Total Energy")
        path.write_text("\n".join(lines) + "\n")
        return 1
    elif how == "atomic number":
        lines[first_atom + 1] = "22 " + lines[first_atom + 1].split(None, 1)[1]
    elif how == "missing forces":
        lines[first_atom + 1] = " ".join(lines[first_atom + 1].split()[:4])
    path.write_text("\n".join(lines) + "\n")
    return first_atom + 2


@pytest.mark.parametrize("how, word", [("truncated", "only 2 follow"), ("nan", "not finite"),
                                       ("Total Energy", "lower-case"), ("atomic number", "atomic numbers"),
                                       ("missing forces", "forces missing")])
def test_bad_xsf_among_many(tmp_path, dataset, how, word):
    bad = tmp_path / "data" / "xsf" / TIO2_NAMES[4]
    line = damage(bad, how)
    before = hashes(tmp_path / "data")
    result = run_cli("augment", "data/generate.in", "--a", "2", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    message = assert_clean_failure(result, tmp_path, before, f"{TIO2_NAMES[4]}, line {line}:", word)
    assert "xsf/" in message


def test_missing_a_without_a_terminal(tmp_path, dataset):
    before = hashes(tmp_path / "data")
    result = run_cli("augment", "data/generate.in", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    assert_clean_failure(result, tmp_path, before, "--a is required", "not a terminal")
    result = run_cli("augment", "data/generate.in", "--a", "2", "--out", "out", cwd=tmp_path)
    assert_clean_failure(result, tmp_path, before, "--delta is required")


def test_existing_output_is_not_touched(tmp_path, dataset):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run_cli("augment", "data/generate.in", "--a", "1", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    assert result.returncode == 2 and "not empty" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


# ------------------------------------------------------------------------------------------- end to end

def test_end_to_end_generate_in(tmp_path, dataset):
    before = hashes(tmp_path / "data")
    result = run_cli("augment", "data/generate.in", "--a", "3", "--delta", "0.02", "--seed", "5", "--out",
                     "runs/aug", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "18 derived structures from 6 of 6 parents" in result.stdout
    assert hashes(tmp_path / "data") == before
    out = tmp_path / "runs" / "aug"
    gen = read_generate_in(out / "generate.in")  # also checks that every listed file exists
    original = read_generate_in(dataset)
    assert (gen.output, gen.types, gen.setups) == (original.output, original.types, original.setups)
    assert len(gen.files) == 6 + 18
    parents = [f for f in gen.files if not f.startswith("derived/")]
    derived = [f for f in gen.files if f.startswith("derived/")]
    assert len(parents) == 6 and len(derived) == 18
    for entry, listed in zip(parents, original.resolved_files()):
        assert not Path(entry).is_absolute()
        assert (out / entry).resolve() == listed.resolve()  # relative to the output folder, and resolves
    # aenet runs generate.x from the output folder: paths must work from there
    for entry in gen.files:
        assert (out / entry).is_file()
    for entry in derived:
        s = read_xsf(out / entry, require_labels=True)  # energy and (placeholder) force columns, as generate.x needs
        assert s.info["derived"] and s.comments[0].startswith("pyita derived structure: parent")
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 18 and [r["file"] for r in rows] == derived
    assert {r["strategy"] for r in rows} == {"balanced"} and {r["seed"] for r in rows} == {"5"}
    run = json.loads((out / "run.json").read_text())
    assert run["pyita_version"] == pyita.__version__
    assert run["settings"]["a"] == 3 and run["settings"]["delta"] == 0.02
    assert run["settings"]["seed"] == 5 and run["settings"]["strategy"] == "balanced"
    assert run["counts"] == {"parents": 6, "excluded": 0, "augmented_parents": 6, "derived": 18}
    # energies in the files are E − F·D of their parents
    for row in rows:
        child = read_xsf(out / row["file"])
        parent = read_xsf(row["parent"])
        D = child.positions - parent.positions
        assert child.energy == pytest.approx(parent.energy - float(np.sum(parent.forces * D)), abs=1e-9)


def test_only_derived(tmp_path, dataset):
    result = run_cli("augment", "data/generate.in", "--a", "2", "--delta", "0.03", "--strategy", "sequential",
                     "--only-derived", "--out", "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    gen = read_generate_in(tmp_path / "out" / "generate.in")
    assert len(gen.files) == 12 and all(f.startswith("derived/") for f in gen.files)
    first = read_xsf(tmp_path / "out" / gen.files[0])
    assert "atom 1 (Ti) +x" in first.comments[1]


def test_extxyz_output_reads_in_ase(tmp_path, dataset):
    result = run_cli("augment", "data/generate.in", "--a", "2", "--delta", "0.03", "--format", "extxyz",
                     "--strategy", "random-all", "--out", "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frames = ase.io.read(tmp_path / "out" / "augmented.extxyz", ":")
    assert len(frames) == 6 + 12
    rows = {r["file"].split("#")[1]: r for r in csv.DictReader((tmp_path / "out" / "manifest.csv").open())}
    derived = [f for f in frames if f.info.get("derived")]
    assert len(derived) == 12 and len(rows) == 12
    for atoms in derived:
        assert atoms.get_potential_energy() == pytest.approx(float(rows[atoms.info["name"]]["energy_eV"]), abs=1e-9)
        assert "forces" not in atoms.calc.results  # derived structures have no force labels
    parents = [f for f in frames if not f.info.get("derived")]
    reference = read_xsf(tmp_path / "data" / "xsf" / TIO2_NAMES[0])
    assert parents[0].get_potential_energy() == pytest.approx(reference.energy, abs=1e-9)
    np.testing.assert_allclose(parents[0].get_forces(), reference.forces, atol=1e-9)


def test_large_delta_warns_but_runs(tmp_path, dataset):
    result = run_cli("augment", "data/generate.in", "--a", "1", "--delta", "0.2", "--out", "out", "-q",
                     cwd=tmp_path)
    assert result.returncode == 0 and "warning:" in result.stderr and "large" in result.stderr


def test_console_script_and_folder_input(tmp_path, dataset):
    if shutil.which("pyita") is None:
        pytest.skip("console script not installed (pip install -e .)")
    result = run_cli("augment", "data/xsf", "--a", "1", "--delta", "0.03", "--out", "out", "-q", cwd=tmp_path,
                     script=True)
    assert result.returncode == 0, result.stderr
    gen = read_generate_in(tmp_path / "out" / "generate.in")
    assert len(gen.files) == 12
    # a folder input has no generate.in to copy from: .stp files written, TYPES fitted to the parents
    assert set(gen.types) == {"Ti", "O"} and all(e < -1 for e in gen.types.values())
    assert (tmp_path / "out" / "Ti.stp").is_file() and (tmp_path / "out" / "O.stp").is_file()


def test_parents_copied_from_non_file_sources_stay_linked_to_their_children(tmp_path):
    """Derived files name their parent by its original source ("tio2-md[3]"); the parent copies under
    parents/ record that name, so a split by parent keeps every child with its parent."""
    from pyita.augment import AugmentSettings
    from pyita.augment.run import run_augment
    from pyita.io import read_structures
    from pyita.train.data import parent_groups

    run_augment("sample:tio2-md", tmp_path / "aug", AugmentSettings(a=2, delta=0.03), progress=False)
    structures = read_structures(tmp_path / "aug" / "generate.in")
    groups = parent_groups(structures)
    derived = [k for k, s in enumerate(structures) if s.info.get("derived")]
    assert len(derived) == 300
    for k in derived:
        parent = structures[groups[k]]
        assert not parent.info.get("derived")
        assert parent.info["original_source"] == structures[k].info["parent_source"]
        # the child differs from its parent by exactly one displaced atom
        moved = np.flatnonzero(np.abs(structures[k].positions - parent.positions).max(axis=1) > 1e-9)
        assert len(moved) == 1
