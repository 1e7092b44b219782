"""Fault injection, as a hostile user would try it: outputs aimed at the inputs, kills mid-run, damaged
results, unwritable folders. Every case runs the CLI as a real subprocess and checks the exit status, the
message, that the inputs are unchanged (checksums), that nothing is left behind and that no worker process
outlives the command."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from faults import (alive, cli_command, cli_env, descendants, error_line, make_case, run_cli, tree_hashes,
                    wait_until)
from pyita.io.locks import try_lock

SMALL_MODEL = ["--radial-rc", 4.0, "--radial-n", 3, "--angular-rc", 3.5, "--angular-n", 2, "--hidden", "3:tanh",
               "--iterations", 2, "--no-cache", "-q"]
AUGMENT = ["--a", 2, "--delta", 0.03, "-q"]


@pytest.fixture
def case(tmp_path) -> Path:
    """tmp_path/case/generate.in + xsf/: the user's data, to be left untouched by every test."""
    return make_case(tmp_path / "case").parent


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny model trained by the CLI on its own data (and the files that run left beside it)."""
    root = tmp_path_factory.mktemp("model")
    make_case(root / "data", n=8)
    result = run_cli("train", "data/generate.in", "--out", "m.pt", *SMALL_MODEL, cwd=root)
    assert result.returncode == 0, result.stderr
    return root / "m.pt"


# ------------------------------------------------------------------------------ outputs onto inputs

@pytest.mark.parametrize("cwd, args, words", [
    ("case", ["augment", "generate.in", *AUGMENT, "--out", ".", "--overwrite"], ["is the current folder"]),
    ("case", ["augment", "generate.in", *AUGMENT, "--out", "xsf", "--overwrite"], ["contains the input file"]),
    ("case", ["augment", "xsf", *AUGMENT, "--out", "xsf/aug"], ["lies inside the input folder xsf"]),
    ("case/xsf", ["augment", "../generate.in", *AUGMENT, "--out", "..", "--overwrite"],
     ["contains the current folder"]),
    ("case", ["augment", "generate.in", *AUGMENT, "--out", "generate.in", "--overwrite"], ["is the input file"]),
    ("case", ["augment", "generate.in", *AUGMENT, "--exclude", "xsf/s00.xsf", "--out", "xsf/s00.xsf"],
     ["input file"]),
    ("case", ["train", "generate.in", "--out", "generate.in", "--overwrite", *SMALL_MODEL], ["is the input file"]),
    ("case", ["train", "generate.in", "--out", "xsf/s00.xsf", "--overwrite", *SMALL_MODEL], ["is the input file"]),
    ("case", ["label", "generate.in", "--calculator", "emt", "--out", "xsf/s01.xsf", "--overwrite"],
     ["is the input file"]),
    ("case", ["check", "generate.in", "--calculator", "emt", "--out", "xsf", "--overwrite"],
     ["contains the input file"]),
    ("case", ["aenet", "prepare", "generate.in", "--out", ".", "--overwrite", "-q"], ["is the current folder"]),
    ("case", ["experiment", "--preset", "quick", "--data", "generate.in", "--out", "."], ["current folder"]),
    ("case", ["experiment", "--preset", "quick", "--data", "generate.in", "--out", "xsf", "--resume"],
     ["contains the input file"]),
])
def test_an_output_onto_an_input_is_refused_and_nothing_is_touched(case, cwd, args, words):
    before = tree_hashes(case)
    result = run_cli(*args, cwd=case.parent / cwd)
    error_line(result, *words)
    assert tree_hashes(case) == before


def test_predict_onto_its_input_folder_or_model_is_refused(case, model):
    before, model_bytes = tree_hashes(case), model.read_bytes()
    error_line(run_cli("predict", model, "xsf", "--out", "xsf", "--overwrite", "-q", cwd=case),
               "is the input folder xsf")
    error_line(run_cli("predict", model, "xsf", "--out", model, "--overwrite", "-q", cwd=case), "is the input file")
    assert tree_hashes(case) == before and model.read_bytes() == model_bytes


def test_overwrite_replaces_only_an_earlier_output_of_the_same_command(case, model):
    notes = case / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("four years of work\n")
    before = tree_hashes(case)
    error_line(run_cli("augment", "generate.in", *AUGMENT, "--out", "notes", "--overwrite", cwd=case),
               "replaces only an earlier output of `pyita augment`", "left untouched")
    assert tree_hashes(case) == before
    # an earlier augment output is replaced; a predict output is not an augment output
    assert run_cli("augment", "generate.in", *AUGMENT, "--out", "../aug", cwd=case).returncode == 0
    again = run_cli("augment", "generate.in", "--a", 1, "--delta", 0.01, "--out", "../aug", "--overwrite", "-q",
                    cwd=case)
    assert again.returncode == 0, again.stderr
    assert json.loads((case.parent / "aug" / "run.json").read_text())["settings"]["a"] == 1
    assert run_cli("predict", model, "xsf", "--out", "../pred", "-q", cwd=case).returncode == 0
    error_line(run_cli("augment", "generate.in", *AUGMENT, "--out", "../pred", "--overwrite", cwd=case),
               "not one")
    # a file that is not a model is not replaced by train
    (case / "results.pt").write_text("my own file\n")
    error_line(run_cli("train", "generate.in", "--out", "results.pt", "--overwrite", *SMALL_MODEL, cwd=case),
               "not a file `pyita train` wrote")
    assert (case / "results.pt").read_text() == "my own file\n"
    assert {k: v for k, v in tree_hashes(case).items() if k != "results.pt"} == before


# ------------------------------------------------------------------------------ what a run leaves

def test_a_successful_train_leaves_the_model_and_its_history_only(model):
    assert sorted(p.name for p in model.parent.iterdir()) == ["data", "m.history.csv", "m.pt"]


def test_outputs_follow_the_users_umask(case, model, tmp_path):
    for mask in (0o022, 0o027):
        out = tmp_path / f"aug-{mask:o}"
        result = subprocess.run(cli_command("augment", "generate.in", *AUGMENT, "--out", out), cwd=case,
                                env=cli_env(), capture_output=True, text=True, preexec_fn=lambda m=mask: os.umask(m))
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~mask
        assert stat.S_IMODE((out / "run.json").stat().st_mode) == 0o666 & ~mask
        assert stat.S_IMODE((out / "derived").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE(model.stat().st_mode) == 0o666 & ~0o022  # pytest runs with the default umask


def test_a_failed_run_creates_no_parent_folders_and_no_temporary_files(case):
    (case / "xsf" / "s03.xsf").write_text("CRYSTAL\nPRIMVEC\n1 0 0\n")   # damaged mid-list
    before = tree_hashes(case)
    error_line(run_cli("augment", "generate.in", *AUGMENT, "--out", "deep/er/out", cwd=case), "s03.xsf")
    assert tree_hashes(case) == before   # no deep/, no .out.tmp-*, no lock file


def test_a_stale_temporary_folder_is_removed_at_the_next_start_and_a_live_one_is_respected(case, tmp_path):
    stale = tmp_path / ".aug.tmp-dead1234"
    (stale / "derived").mkdir(parents=True)
    for k in range(5):
        (stale / "derived" / f"x{k}.xsf").write_text("partial\n")
    result = run_cli("augment", "generate.in", *AUGMENT, "--out", "../aug", cwd=case)
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stderr and ".aug.tmp-dead1234" in result.stderr and "5 files" in result.stderr
    assert not stale.exists()
    # a temporary folder whose writer is alive (its lock is held) is not touched, and the run is refused
    lock = try_lock(tmp_path / ".aug2.tmp-live5678.lock")
    live = tmp_path / ".aug2.tmp-live5678"
    live.mkdir()
    try:
        error_line(run_cli("augment", "generate.in", *AUGMENT, "--out", "../aug2", cwd=case),
                   f"pid {os.getpid()}", "is writing")
        assert live.exists()
    finally:
        lock.release()


def _immutable(folder: Path) -> bool:
    """Make ``folder`` unwritable, even for root (chattr +i); False where that is impossible."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


def test_an_unwritable_output_folder_is_one_clear_line(case, tmp_path):
    locked = tmp_path / "readonly"
    locked.mkdir()
    if not _immutable(locked):
        pytest.skip("cannot make a read-only folder here")
    try:
        error_line(run_cli("augment", "generate.in", *AUGMENT, "--out", locked / "out", cwd=case),
                   "no permission to create files in", "readonly")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(locked)])
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_worker_counts_below_one_are_refused(case, workers):
    error_line(run_cli("augment", "generate.in", *AUGMENT, "--workers", workers, "--out", "../aug", cwd=case),
               "--workers")
    assert not (case.parent / "aug").exists()


# ------------------------------------------------------------------------------ interruptions

def _start(args, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_command(*args), cwd=cwd, env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_no_survivors(children: set[int]) -> None:
    assert children, "the command started no worker processes"
    assert wait_until(lambda: not any(alive(pid) for pid in children), timeout=5.0), \
        [pid for pid in children if alive(pid)]


@pytest.fixture
def big_case(tmp_path) -> Path:
    """Enough parents that augmenting them with two workers takes a few seconds."""
    return make_case(tmp_path / "big", n=1500)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_augment_leaves_no_worker_and_the_next_run_cleans_up(big_case, tmp_path, how):
    before = tree_hashes(big_case.parent)
    process = _start(["augment", "generate.in", "--a", 30, "--delta", 0.03, "--workers", 2, "-q",
                      "--out", "../aug"], big_case.parent)
    temporary = []

    def working() -> bool:
        temporary[:] = [p for p in tmp_path.glob(".aug.tmp-*") if p.is_dir()]
        return bool(temporary) and len(descendants(process.pid)) >= 2 and \
            sum(1 for _ in (temporary[0] / "derived").iterdir()) > 200

    assert wait_until(working, timeout=60), process.communicate()
    children = descendants(process.pid)
    process.send_signal(how)
    _, stderr = process.communicate(timeout=30)
    _assert_no_survivors(children)
    assert tree_hashes(big_case.parent) == before
    assert not (tmp_path / "aug").exists()
    if how == signal.SIGTERM:   # a clean stop: one line, and the temporary folder is gone already
        assert process.returncode == 128 + signal.SIGTERM
        error_line(subprocess.CompletedProcess([], 2, "", stderr), "interrupted by SIGTERM")
        assert not list(tmp_path.glob(".aug.tmp-*"))
        return
    assert temporary[0].exists()   # SIGKILL: nothing could clean up; the next run does, and says so
    rerun = run_cli("augment", "generate.in", "--a", 1, "--delta", 0.03, "-q", "--out", "../aug",
                    cwd=big_case.parent)
    assert rerun.returncode == 0, rerun.stderr
    assert "removed" in rerun.stderr and temporary[0].name in rerun.stderr
    assert not list(tmp_path.glob(".aug.tmp-*"))


EXPERIMENT = """
[experiment]
name = "faults"
data = "sample:tio2-md"
trials = 2
subset_size = 24
test_fraction = 0.25
seed = 1
workers = 2

[trainer]
iterations = {iterations}
hidden = "4:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "balanced"
augment = {{ strategy = "balanced", a = 2, delta = 0.02 }}
"""


def test_killed_experiment_leaves_no_worker_and_a_live_one_refuses_resume(tmp_path):
    config = tmp_path / "faults.toml"
    config.write_text(EXPERIMENT.format(iterations=100000))
    out = tmp_path / "out"
    process = _start(["experiment", config, "--out", out, "-q"], tmp_path)
    assert wait_until(lambda: len(descendants(process.pid)) >= 2 and (out / ".pyita.lock").exists(), timeout=60)
    resumed = run_cli("experiment", config, "--out", out, "--resume", "-q", cwd=tmp_path)
    error_line(resumed, "in use by another pyita process", f"pid {process.pid}")
    time.sleep(1.0)   # let the workers get into their tasks
    children = descendants(process.pid)
    process.kill()
    process.communicate(timeout=30)
    _assert_no_survivors(children)
    results = sorted((out / "results").rglob("*")) if (out / "results").exists() else []
    time.sleep(1.0)
    assert (sorted((out / "results").rglob("*")) if (out / "results").exists() else []) == results


def test_a_damaged_result_is_redone_on_resume(tmp_path):
    config = tmp_path / "faults.toml"
    config.write_text(EXPERIMENT.format(iterations=3).replace("workers = 2", "workers = 1"))
    out = tmp_path / "out"
    first = run_cli("experiment", config, "--out", out, "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    damaged = out / "results" / "trial-000" / "baseline.json"
    good = json.loads(damaged.read_text())
    others = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json") if p != damaged}
    damaged.write_text(damaged.read_text()[:40])   # truncated, as by a full disk
    report = run_cli("experiment", config, "--out", out, "--report-only", "-q", cwd=tmp_path)
    error_line(report, "baseline.json", "unreadable", "--resume")
    resumed = run_cli("experiment", config, "--out", out, "--resume", "-q", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "baseline.json" in resumed.stderr and "running that task again" in resumed.stderr
    redone = json.loads(damaged.read_text())
    assert {k: redone[k] for k in ("trial", "condition", "seed", "n_test")} == \
        {k: good[k] for k in ("trial", "condition", "seed", "n_test")}
    assert {p: p.stat().st_mtime_ns for p in others} == others   # the intact results were kept, not redone
    assert (out / "report.md").exists()


# ------------------------------------------------------------------------------ lists of names

def test_test_parents_written_by_aenet_prepare_exclude_them_from_any_folder(case, tmp_path):
    prepared = run_cli("aenet", "prepare", "generate.in", "--out", "../run", "--test-fraction", 0.34, "-q",
                       cwd=case)
    assert prepared.returncode == 0, prepared.stderr
    listed = [ln for ln in (tmp_path / "run" / "test-parents.txt").read_text().splitlines()
              if ln and not ln.startswith("#")]
    assert len(listed) == 2 and all(ln.startswith("../case/xsf/") for ln in listed)   # from the list's folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("augment", case / "generate.in", *AUGMENT, "--exclude", "../run/test-parents.txt",
                     "--out", "aug", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    run = json.loads((elsewhere / "aug" / "run.json").read_text())
    assert run["counts"]["excluded"] == 2 and run["counts"]["augmented_parents"] == 4


def test_an_exclude_entry_that_matches_no_parent_is_an_error(case):
    (case / "test.txt").write_text("xsf/s00.xsf\nxsf/s99.xsf\n")
    before = tree_hashes(case)
    error_line(run_cli("augment", "generate.in", *AUGMENT, "--exclude", "test.txt", "--out", "../aug", cwd=case),
               "test.txt", "1 of 2 exclude entries match no parent", "xsf/s99.xsf")
    assert tree_hashes(case) == before and not (case.parent / "aug").exists()
