"""The aenet loop with the real aenet 2.0.4 (../shared/tools or AENET_BIN; skipped cleanly without it):
PyITA's outputs run in aenet's programs exactly as written."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from pyita.backends import aenet
from pyita.errors import PyitaError
from pyita.architecture import ChebyshevSetup
from pyita.io.aenet_inputs import format_stp
from pyita.io.generate_in import read_generate_in

from faults import run_cli

DATA = Path(__file__).resolve().parent / "data" / "aenet"
E_TI, E_O = -1626.66972707, -433.23448532


def aenet_or_skip() -> dict:
    try:
        return aenet.find_executables()
    except PyitaError:
        pytest.skip("aenet (generate.x, train.x, predict.x) is not installed")


def run_generate(exe: dict, folder: Path) -> str:
    """generate.x in ``folder``, as a user runs it; aenet exits 0 after errors, so its output is checked."""
    done = subprocess.run([str(exe["generate"]), "generate.in"], cwd=folder, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "Error" not in done.stdout + done.stderr, done.stdout[-2000:] + done.stderr
    return done.stdout


def write_project(folder: Path, setups_folder: str = ".") -> Path:
    """A user's generate.in with SETUPS (in ``setups_folder``) and FILES pointing at the test structures."""
    (folder / setups_folder).mkdir(parents=True, exist_ok=True)
    for sym in ("Ti", "O"):
        (folder / setups_folder / f"{sym}.stp").write_text(format_stp(sym, ["Ti", "O"], ChebyshevSetup(
            radial_rc=4.0, radial_n=4, angular_rc=3.5, angular_n=2)))
    files = sorted((DATA / "xsf").glob("s0*.xsf"))
    stp = "" if setups_folder == "." else f"{setups_folder}/"
    (folder / "generate.in").write_text(
        f"OUTPUT TiO2.train\n\nTYPES\n2\nTi {E_TI}\nO {E_O}\n\nSETUPS\nTi '{stp}Ti.stp'\nO '{stp}O.stp'\n\n"
        f"FILES\n{len(files)}\n" + "".join(f"{p}\n" for p in files))
    return folder / "generate.in"


@pytest.mark.parametrize("setups_folder", [".", "setups"])
def test_augmented_generate_in_runs_in_its_own_folder(tmp_path, setups_folder):
    """augment, then ``cd aug && generate.x generate.in`` — the seed's whole workflow — with the setup files
    beside generate.in or in a folder of their own."""
    exe = aenet_or_skip()
    generate_in = write_project(tmp_path / "project", setups_folder)
    before = {p: p.read_bytes() for p in (tmp_path / "project").rglob("*") if p.is_file()}
    done = run_cli("augment", generate_in, "--a", 2, "--delta", 0.03, "--out", tmp_path / "aug", "-q",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    aug = tmp_path / "aug"
    written = read_generate_in(aug / "generate.in")
    assert written.setups == {"Ti": "Ti.stp", "O": "O.stp"}
    for sym in ("Ti", "O"):   # copies, byte for byte
        assert (aug / f"{sym}.stp").read_bytes() == (tmp_path / "project" / setups_folder / f"{sym}.stp").read_bytes()
    assert {p: p.read_bytes() for p in before} == before   # the user's files are untouched
    output = run_generate(exe, aug)
    assert (aug / "TiO2.train").is_file()
    assert re.search(rf"Number of structures in the data set:\s+{len(written.files)}\n", output)
    assert len(written.files) == 6 * 3   # six parents, two derived each


def test_augment_warns_of_a_missing_setup_file(tmp_path):
    """generate.x needs the setup files, the augmentation does not: a warning names the missing one."""
    generate_in = write_project(tmp_path / "project")
    (tmp_path / "project" / "O.stp").unlink()
    done = run_cli("augment", generate_in, "--a", 2, "--delta", 0.03, "--out", tmp_path / "aug", "-q",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "O.stp" in line]
    assert len(warned) == 1 and "does not exist" in warned[0] and "generate.in" in warned[0]
    assert read_generate_in(tmp_path / "aug" / "generate.in", check_files=False).setups == {"Ti": "Ti.stp",
                                                                                           "O": "O.stp"}
    assert (tmp_path / "aug" / "Ti.stp").is_file() and not (tmp_path / "aug" / "O.stp").exists()


def test_prepared_folder_names_sources_from_its_own_folder_and_runs(tmp_path):
    """``pyita aenet prepare`` on an augmented set, run from one folder; structures.csv's source and parent
    columns and test-parents.txt resolve from the run folder itself, and ``--exclude`` with that list, run
    from another folder, leaves exactly the test parents unaugmented. The run folder's generate.x runs."""
    exe = aenet_or_skip()
    generate_in = write_project(tmp_path / "project")
    (tmp_path / "a" / "deeper").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    assert run_cli("augment", generate_in, "--a", 1, "--delta", 0.03, "--out", tmp_path / "aug", "-q",
                   cwd=tmp_path / "a").returncode == 0
    done = run_cli("aenet", "prepare", "../../aug/generate.in", "--out", "../../run", "--test-fraction", 0.34,
                   "--seed", 1, "-q", cwd=tmp_path / "a" / "deeper")
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    with open(run / "structures.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    originals = {}
    for row in rows:
        source = (run / row["source"]).resolve()
        assert source.is_file(), row
        if row["kind"] == "derived":
            parent = (run / row["parent"]).resolve()
            assert parent.parent == DATA / "xsf" and source.name.startswith(parent.stem + "-t"), row
        else:
            assert source.parent == DATA / "xsf"
            originals[source] = row["role"]
    listed = [line for line in (run / "test-parents.txt").read_text().splitlines() if not line.startswith("#")]
    held_out = {(run / name).resolve() for name in listed}
    assert held_out == {p for p, role in originals.items() if role == "test"} and len(held_out) == 2
    done = run_cli("augment", generate_in, "--a", 1, "--delta", 0.03, "--exclude",
                   tmp_path / "run" / "test-parents.txt", "--out", tmp_path / "aug2", "-q", cwd=tmp_path / "b")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "aug2" / "manifest.csv", newline="") as handle:
        augmented = {(tmp_path / "b" / row["parent"]).resolve() for row in csv.DictReader(handle)}
    assert augmented and not augmented & held_out
    run_generate(exe, run)


def test_experiment_on_aenet_runs_in_its_own_folder_and_clears_what_a_killed_run_left(tmp_path):
    """Without ``keep_runs`` the aenet run folders are temporary, inside the experiment folder rather than the
    system's temporary folder (a killed run cannot remove its own), removed after each run and on --resume."""
    exe = aenet_or_skip()
    config = tmp_path / "exp.toml"
    config.write_text('[experiment]\ndata = "sample:tio2-md"\nsubset_size = 8\ntrials = 1\ntest_fraction = 0.25\n'
                      'workers = 1\n\n[trainer]\nmethod = "lbfgs"\niterations = 1\nhidden = "3:tanh"\n\n'
                      '[[condition]]\nname = "baseline"\n')
    system_tmp, out = tmp_path / "tmp", tmp_path / "out"
    system_tmp.mkdir()
    args = ("experiment", config, "--backend", "aenet", "--aenet-bin", Path(exe["train"]).parent, "--out", out, "-q")
    env = {"PYITA_AENET_CACHE": tmp_path / "cache", "TMPDIR": system_tmp}
    done = run_cli(*args, cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert (out / "results" / "trial-000" / "baseline.json").is_file()
    assert list(system_tmp.iterdir()) == [] and not (out / ".aenet-scratch").exists()
    killed = out / ".aenet-scratch" / "pyita-aenet-killed" / "run"
    killed.mkdir(parents=True)
    (killed / "train.in").write_text("left by a killed run\n")
    done = run_cli(*args, "--resume", cwd=tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert not (out / ".aenet-scratch").exists() and list(system_tmp.iterdir()) == []


def test_experiment_on_aenet_keeps_named_run_folders(tmp_path):
    """``pyita experiment --backend aenet --aenet-bin …`` on a config written for the embedded trainer
    (lbfgs): the force-training condition is left out with a warning, the A/A condition starts from other
    initial networks, and ``keep_runs`` folders sit under the output, named in each task's result."""
    exe = aenet_or_skip()
    config = tmp_path / "exp.toml"
    config.write_text(
        '[experiment]\ndata = "sample:tio2-md"\nsubset_size = 16\ntrials = 2\ntest_fraction = 0.25\n'
        'workers = 1\n\n[trainer]\nmethod = "lbfgs"\niterations = 2\nhidden = "4:tanh"\nkeep_runs = true\n\n'
        '[[condition]]\nname = "baseline"\n\n'
        '[[condition]]\nname = "balanced"\naugment = { strategy = "balanced", a = 1, delta = 0.03 }\n\n'
        '[[condition]]\nname = "other weights"\ninit_seed_offset = 1\n\n'
        '[[condition]]\nname = "forces"\ntrainer = { force_weight = 0.1 }\n')
    done = run_cli("experiment", config, "--backend", "aenet", "--aenet-bin", Path(exe["train"]).parent,
                   "--out", tmp_path / "out", "-q", cwd=tmp_path, PYITA_AENET_CACHE=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "condition 'forces' left out" in done.stderr and "force_weight" in done.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "results" / "trial-000").glob("*.json")) == [
        "balanced.json", "baseline.json", "other_weights.json"]
    initial = {}
    for result in (out / "results").glob("trial-*/*.json"):
        summary = json.loads(result.read_text())
        run = (result.parent / summary["aenet_run"]).resolve()
        assert run.parent.parent == out / "aenet-runs" and (run / "train.out").is_file()
        assert "METHOD\nbfgs" in (run / "train.in").read_text()
        initial[summary["trial"], summary["condition"]] = {p.name: p.read_bytes()
                                                          for p in (run / "initial-networks").iterdir()}
    for trial in (0, 1):   # the same initial networks within a trial, other ones for the A/A condition
        assert initial[trial, "baseline"] == initial[trial, "balanced"] != initial[trial, "other weights"]
    assert "left out" in (out / "report.md").read_text()
    assert json.loads((out / "experiment.json").read_text())["left_out"] == {
        "forces": "aenet's Fortran train.x fits energies only (force_weight)"}
