"""Nothing of yours touched, round 2 (issue 22, classes 1–5): what the second hostile probe found. Every case
runs the CLI as a real subprocess and checks the exit status, the one-line message and, by checksums, that a
user's files are exactly as they were."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from faults import error_line, make_case, run_cli, tree_hashes, warning_lines
from pyita.io.locks import try_lock

SMALL_MODEL = ["--radial-rc", 4.0, "--radial-n", 3, "--angular-rc", 3.5, "--angular-n", 2, "--hidden", "3:tanh",
               "--iterations", 2, "--no-cache", "-q"]
AUGMENT = ["--a", 2, "--delta", 0.03, "-q"]

EXPERIMENT = """
[experiment]
name = "own"
data = "sample:tio2-md"
trials = 2
subset_size = 16
test_fraction = 0.25
seed = 1
workers = 1

[trainer]
iterations = {iterations}
hidden = "3:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "{second}"
augment = {{ strategy = "balanced", a = 1, delta = 0.02 }}
"""


@pytest.fixture
def case(tmp_path) -> Path:
    return make_case(tmp_path / "case").parent


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished two-trial experiment (its config file, its folder), made once for the module."""
    root = tmp_path_factory.mktemp("experiment")
    config = root / "own.toml"
    config.write_text(EXPERIMENT.format(iterations=2, second="balanced"))
    result = run_cli("experiment", config, "--out", "done", "-q", cwd=root)
    assert result.returncode == 0, result.stderr
    return config, root / "done"


def _copy(finished, tmp_path) -> Path:
    out = tmp_path / "done"
    shutil.copytree(finished[1], out)
    return out


# ------------------------------------------------------------------------------ 1. --report-only

def test_report_only_refuses_a_folder_that_is_not_an_experiment(tmp_path, finished):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own report\n")
    (mine / "summary.json").write_text('{"mine": true}\n')
    before = tree_hashes(mine)
    error_line(run_cli("experiment", finished[0], "--out", mine, "--report-only", "-q", cwd=tmp_path),
               "holds no experiment.json", "not an experiment folder")
    error_line(run_cli("experiment", "--out", mine, "--report-only", "-q", cwd=tmp_path), "holds no experiment.json")
    assert tree_hashes(mine) == before


def test_report_only_never_writes_into_the_data_folder(case, finished):
    before = tree_hashes(case)
    error_line(run_cli("experiment", finished[0], "--data", "generate.in", "--out", ".", "--report-only", "-q",
                       cwd=case), "not an experiment folder")
    assert tree_hashes(case) == before


def test_report_only_reports_the_stored_settings_and_refuses_another_config(tmp_path, finished):
    out = _copy(finished, tmp_path)
    stored = json.loads((out / "summary.json").read_text())["config"]
    other = tmp_path / "other.toml"
    other.write_text(EXPERIMENT.format(iterations=7, second="balanced"))
    results = tree_hashes(out / "results")
    error_line(run_cli("experiment", other, "--out", out, "--report-only", "-q", cwd=tmp_path),
               "trainer.iterations: 2 recorded, 7 given")
    error_line(run_cli("experiment", finished[0], "--trials", 3, "--out", out, "--report-only", "-q", cwd=tmp_path),
               "trials: 2 recorded, 3 given")
    error_line(run_cli("experiment", "--preset", "quick", "--out", out, "--report-only", "-q", cwd=tmp_path),
               "recorded", "given")
    error_line(run_cli("experiment", "--trials", 5, "--out", out, "--report-only", "-q", cwd=tmp_path),
               "--trials cannot change it")
    (out / "report.md").unlink()
    alone = run_cli("experiment", "--out", out, "--report-only", "-q", cwd=tmp_path)   # no config: the stored one
    assert alone.returncode == 0, alone.stderr
    assert json.loads((out / "summary.json").read_text())["config"] == stored
    assert (out / "report.md").is_file() and tree_hashes(out / "results") == results
    same = run_cli("experiment", finished[0], "--out", out, "--report-only", "--workers", 2, "-q", cwd=tmp_path)
    assert same.returncode == 0, same.stderr


def test_report_only_waits_for_no_one_while_an_experiment_runs(tmp_path, finished):
    out = _copy(finished, tmp_path)
    lock = try_lock(out / ".pyita.lock")   # as a running experiment holds it
    try:
        before = tree_hashes(out)
        error_line(run_cli("experiment", "--out", out, "--report-only", "-q", cwd=tmp_path),
                   "in use by another pyita process")
        assert {k: v for k, v in tree_hashes(out).items() if k != ".pyita.lock"} == \
            {k: v for k, v in before.items() if k != ".pyita.lock"}
    finally:
        lock.release()


# ------------------------------------------------------------------------------ 2. result file names

@pytest.mark.parametrize("first, second", [("aug ment", "aug_ment"), ("α", "β"), ("Forces", "forces"),
                                           ("baseline", "baseline!"), ("x", "")])
def test_condition_names_sharing_a_result_file_are_refused_before_anything_is_written(tmp_path, first, second):
    config = tmp_path / "names.toml"
    config.write_text(EXPERIMENT.format(iterations=2, second=second).replace('name = "baseline"',
                                                                             f'name = "{first}"'))
    result = run_cli("experiment", config, "--out", "out", "-q", cwd=tmp_path)
    line = error_line(result, "names.toml")
    assert ("share the result file name" in line) or ("is empty" in line), line
    assert not (tmp_path / "out").exists()


def test_distinct_non_ascii_names_that_stay_distinct_run(tmp_path):
    from pyita.experiment.results import refuse_shared_file_names, result_paths

    names = ["baseline", "δ=0.01", "δ=0.02", "parent–child", "parent-child 10"]
    refuse_shared_file_names(names)
    assert len({result_paths(tmp_path, 0, n)[0] for n in names}) == len(names)


# ------------------------------------------------------------------------------ 3. check's OUT.partial

def test_check_never_deletes_a_folder_that_merely_shares_its_checkpoint_name(case):
    partial = case.parent / "out.partial"
    partial.mkdir()
    (partial / "thesis.tex").write_text("four years of work\n")
    before = tree_hashes(partial)
    for extra in ([], ["--restart"]):
        error_line(run_cli("check", "generate.in", "--calculator", "emt", "--parents", 2, "--delta", "0.01",
                           "--strategy", "balanced", "--a", 1, "--out", "../out", "-q", *extra, cwd=case),
                   "out.partial", "not a checkpoint folder of `pyita check`", "left untouched")
    assert tree_hashes(partial) == before and not (case.parent / "out").exists()


def _copper(folder: Path) -> Path:
    """Two rattled copper cells (EMT knows copper), as an extended-XYZ file."""
    import ase.io
    from ase.build import bulk

    cells = [bulk("Cu", cubic=True).repeat((2, 1, 1)) for _ in range(2)]
    for k, atoms in enumerate(cells):
        atoms.rattle(0.05, seed=k)
    path = folder / "copper.extxyz"
    ase.io.write(path, cells)
    return path


def test_check_removes_its_own_checkpoint_folder_and_keeps_a_users_file_put_inside(tmp_path):
    from pyita.check.label import FOLDER_RECORD, CheckpointFolder

    args = ["check", _copper(tmp_path), "--calculator", "emt", "--parents", 2, "--delta", "0.01", "--strategy",
            "balanced", "--a", 1, "-q"]
    done = run_cli(*args, "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "check.json").is_file() and not (tmp_path / "out.partial").exists()
    # a checkpoint folder of its own that a user put a file into: the checkpoints go, the file stays
    folder = CheckpointFolder(tmp_path / "own.partial", "check")
    folder.create()
    (folder.path / "notes.txt").write_text("mine\n")
    assert sorted(p.name for p in folder.path.iterdir()) == sorted([FOLDER_RECORD, "notes.txt"])
    kept = run_cli(*args, "--out", "own", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert any("kept" in ln and "own.partial" in ln for ln in warning_lines(kept)), kept.stderr
    assert sorted(p.name for p in folder.path.iterdir()) == ["notes.txt"]


def test_label_restart_never_deletes_a_file_that_merely_shares_its_checkpoint_name(case):
    (case.parent / "out.xyz.partial").write_text("my own notes\n")
    for extra in ([], ["--restart"]):
        error_line(run_cli("label", "generate.in", "--calculator", "emt", "--out", "../out.xyz", "-q", *extra,
                           cwd=case), "out.xyz.partial", "not a PyITA checkpoint", "left untouched")
    assert (case.parent / "out.xyz.partial").read_text() == "my own notes\n"


# ------------------------------------------------------------------------------ 4. files beside the model

def test_train_refuses_to_replace_or_delete_files_beside_the_model(case):
    (case / "m.history.csv").write_text("my own table\n")
    error_line(run_cli("train", "generate.in", "--out", "m.pt", *SMALL_MODEL, cwd=case), "m.history.csv exists")
    error_line(run_cli("train", "generate.in", "--out", "m.pt", "--overwrite", *SMALL_MODEL, cwd=case),
               "m.history.csv", "not a file `pyita train` wrote")
    assert (case / "m.history.csv").read_text() == "my own table\n" and not (case / "m.pt").exists()
    (case / "n.pt.ckpt").write_text("my own checkpoint of something else\n")
    error_line(run_cli("train", "generate.in", "--out", "n.pt", *SMALL_MODEL, cwd=case), "n.pt.ckpt exists",
               "--resume")
    error_line(run_cli("train", "generate.in", "--out", "n.pt", "--overwrite", *SMALL_MODEL, cwd=case),
               "n.pt.ckpt", "not a file `pyita train` wrote")
    error_line(run_cli("train", "generate.in", "--out", "n.pt", "--resume", *SMALL_MODEL, cwd=case),
               "n.pt.ckpt", "not a checkpoint of `pyita train`")
    assert (case / "n.pt.ckpt").read_text() == "my own checkpoint of something else\n"
    assert not (case / "n.pt").exists()


def test_train_refuses_a_folder_in_the_way_before_training(case):
    (case / "f.history.csv").mkdir()
    line = error_line(run_cli("train", "generate.in", "--out", "f.pt", *SMALL_MODEL, cwd=case), "f.history.csv",
                      "is a folder")
    assert ".tmp-" not in line and not (case / "f.pt").exists()


def test_train_out_with_a_slash_names_a_folder_and_is_refused(case):
    error_line(run_cli("train", "generate.in", "--out", "newdir/", *SMALL_MODEL, cwd=case), "names a folder",
               "newdir/model.pt")
    assert not (case / "newdir").exists()


def test_train_overwrite_replaces_its_own_three_files(case):
    first = run_cli("train", "generate.in", "--out", "m.pt", *SMALL_MODEL, cwd=case)
    assert first.returncode == 0, first.stderr
    again = run_cli("train", "generate.in", "--out", "m.pt", "--overwrite", *SMALL_MODEL, cwd=case)
    assert again.returncode == 0, again.stderr
    assert (case / "m.history.csv").read_text().startswith("epoch,loss")


# ------------------------------------------------------------------------------ 5. files a user added

@pytest.mark.parametrize("command, added", [
    (["augment", "generate.in", *AUGMENT], "augmented.train"),
    (["aenet", "prepare", "generate.in", "--test-fraction", 0.34, "-q"], "predict.in.mine"),
])
def test_overwrite_refuses_a_folder_with_files_the_user_added(case, command, added):
    assert run_cli(*command, "--out", "../out", cwd=case).returncode == 0
    out = case.parent / "out"
    (out / added).write_text("made by the user, e.g. generate.x's output\n")
    (out / "extra").mkdir()
    before = tree_hashes(out)
    error_line(run_cli(*command, "--out", "../out", "--overwrite", cwd=case), added, "extra",
               "replaces only what", "left untouched")
    assert tree_hashes(out) == before
    (out / added).unlink()
    (out / "extra").rmdir()
    again = run_cli(*command, "--out", "../out", "--overwrite", cwd=case)   # its own files only: replaced
    assert again.returncode == 0, again.stderr


def test_the_record_lists_every_file_of_the_output(case):
    assert run_cli("augment", "generate.in", *AUGMENT, "--out", "../aug", cwd=case).returncode == 0
    out = case.parent / "aug"
    listed = json.loads((out / "run.json").read_text())["files"]
    assert sorted(listed + ["run.json"]) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


def test_an_older_record_without_a_file_list_is_not_overwritten(case):
    assert run_cli("augment", "generate.in", *AUGMENT, "--out", "../aug", cwd=case).returncode == 0
    record = case.parent / "aug" / "run.json"
    old = json.loads(record.read_text())
    del old["files"]
    record.write_text(json.dumps(old))
    before = tree_hashes(case.parent / "aug")
    error_line(run_cli("augment", "generate.in", *AUGMENT, "--out", "../aug", "--overwrite", cwd=case),
               "does not list the files", "left untouched")
    assert tree_hashes(case.parent / "aug") == before


def test_experiment_overwrite_starts_again_but_never_removes_a_users_file(tmp_path, finished):
    out = _copy(finished, tmp_path)
    refused = run_cli("experiment", finished[0], "--out", out, "-q", cwd=tmp_path)
    error_line(refused, "not empty", "--overwrite")
    (out / "my-notes.txt").write_text("mine\n")
    before = tree_hashes(out)
    error_line(run_cli("experiment", finished[0], "--out", out, "--overwrite", "-q", cwd=tmp_path), "my-notes.txt",
               "left untouched")
    assert tree_hashes(out) == before
    (out / "my-notes.txt").unlink()
    other = tmp_path / "other.toml"
    other.write_text(EXPERIMENT.format(iterations=3, second="balanced"))
    again = run_cli("experiment", other, "--out", out, "--overwrite", "-q", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "experiment.json").read_text())["trainer"]["iterations"] == 3
    results = json.loads((out / "results" / "trial-000" / "baseline.json").read_text())
    assert len(results["history"]) == 3
    error_line(run_cli("experiment", other, "--out", tmp_path / "mine", "--overwrite", "--resume", "-q",
                       cwd=tmp_path), "give one of them")
