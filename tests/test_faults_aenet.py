"""Faults between PyITA and the real aenet 2.0.4 (../shared/tools or AENET_BIN; skipped cleanly without it):
XSF whitespace aenet cannot read, aenet's errors under exit status 0, and interrupted `pyita aenet run`s."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pyita.backends import aenet
from pyita.backends.aenet.settings import RUN_STATE
from pyita.errors import PyitaError
from pyita.io.xsf import read_xsf

from faults import alive, cli_command, cli_env, descendants, error_line, make_case, run_cli, wait_until, \
    warning_lines


@pytest.fixture()
def exes() -> dict:
    try:
        return aenet.find_executables()
    except PyitaError:
        pytest.skip("aenet (generate.x, train.x, predict.x) is not installed")


def tabbed_case(root: Path) -> Path:
    """``make_case`` with every field of the cell and atom lines separated by one tab (PyITA reads that)."""
    generate_in = make_case(root)
    for path in (root / "xsf").glob("*.xsf"):
        lines = path.read_text().splitlines()
        path.write_text("\n".join("\t".join(ln.split()) if k > 1 else ln for k, ln in enumerate(lines)) + "\n")
    return generate_in


def test_tab_separated_xsf_is_respaced_for_aenet(tmp_path, exes):
    """generate.x stops on a tab after the symbol ("incomplete output data", exit 0): the run folder of
    `aenet prepare` and the output of `augment` hold the same values with spaces, and aenet runs them."""
    generate_in = tabbed_case(tmp_path / "case")
    originals = {p.name: read_xsf(p) for p in (tmp_path / "case" / "xsf").glob("*.xsf")}
    done = run_cli("aenet", "prepare", generate_in, "-o", "run", "-q", "--iterations", 2, "--hidden", "3:tanh",
                   "--test-fraction", 0.3, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = sorted((tmp_path / "run" / "xsf").rglob("*.xsf"))
    assert len(written) == 6 and not any("\t" in p.read_text() for p in written)
    for p in written:
        assert read_xsf(p).positions.tolist() == originals[p.name].positions.tolist()
    done = run_cli("aenet", "run", "run", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = run_cli("augment", generate_in, "--a", 1, "--delta", 0.03, "-o", "aug", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = (tmp_path / "aug" / "generate.in").read_text()
    assert not any("\t" in p.read_text() for p in (tmp_path / "aug").rglob("*.xsf"))
    assert "../case/xsf" not in listed   # the user's tabbed files are not listed; spaced copies are
    run = subprocess.run([str(exes["generate"]), "generate.in"], cwd=tmp_path / "aug", capture_output=True,
                         text=True, timeout=120)
    assert "Error" not in run.stdout + run.stderr and re.search(r"data set:\s+12\n", run.stdout), run.stdout


def test_aenet_error_under_exit_status_0_is_one_line(tmp_path, exes):
    make_case(tmp_path / "case")
    done = run_cli("aenet", "prepare", tmp_path / "case" / "generate.in", "-o", "run", "-q", "--iterations", 2,
                   "--hidden", "3:tanh", "--test-fraction", 0.3, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    victim = sorted((tmp_path / "run" / "xsf" / "train").glob("*.xsf"))[0]   # a user's edit aenet rejects
    lines = victim.read_text().splitlines()
    lines[-1] = "\t".join(lines[-1].split())
    victim.write_text("\n".join(lines) + "\n")
    line = error_line(run_cli("aenet", "run", "run", "-q", cwd=tmp_path), "generate.x", "run",
                      "incomplete output data")
    assert "run/generate.out" in line


def _start_run(folder: Path) -> subprocess.Popen:
    """`pyita aenet run` as a foreground command sees it: Ctrl-C not ignored (a shell ignores it for background
    jobs, and this test may itself run as one)."""
    return subprocess.Popen(cli_command("aenet", "run", "run", "-q"), cwd=folder, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _in_training(run: Path) -> bool:
    return len(list(run.glob("*.nn-*"))) >= 4


def _rerun_training(run: Path) -> bool:
    """A rerun has removed the old output and train.x has written new epochs."""
    try:
        state = json.loads((run / RUN_STATE).read_text())
    except (OSError, ValueError):
        return False
    return bool(state.get("removed_before_run")) and (state.get("running") or {}).get("step") == "train" \
        and _in_training(run)


def _long_run(tmp_path: Path) -> Path:
    """A run folder whose train.x would take hours (a million Adam epochs), to interrupt."""
    make_case(tmp_path / "case")
    done = run_cli("aenet", "prepare", tmp_path / "case" / "generate.in", "-o", "run", "-q", "--iterations",
                   1_000_000, "--method", "adam", "--hidden", "3:tanh", "--test-fraction", 0.3, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "run"


def test_ctrl_c_says_what_is_left(tmp_path, exes):
    """SIGINT gives the same kind of line as SIGTERM (typer turned it into a silent exit 130)."""
    run = _long_run(tmp_path)
    process = _start_run(tmp_path)
    assert wait_until(lambda: _in_training(run), 60)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: interrupted by SIGINT; the partial aenet output in run is kept; rerun "
                      "`pyita aenet run run` to start again"], stderr
    assert "Traceback" not in stderr


def test_interrupted_aenet_run_is_recognised_and_rerun(tmp_path, exes):
    """SIGKILL during train.x: the rerun recognises its own run (record "running", no process holds it),
    removes its partial output and starts again, saying so; SIGTERM says what is left and exits 143."""
    run = _long_run(tmp_path)
    inputs = {p.name for p in run.rglob("*")}
    process = _start_run(tmp_path)
    assert wait_until(lambda: _in_training(run), 60)
    children = descendants(process.pid)
    process.kill()
    process.wait()
    assert children and wait_until(lambda: not any(alive(pid) for pid in children), 10)   # train.x died too
    left = {p.name for p in run.iterdir()} - inputs
    assert "aenet.train" in left and "train.out" in left

    process = _start_run(tmp_path)
    assert wait_until(lambda: _rerun_training(run), 60)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    result = subprocess.CompletedProcess(process.args, process.returncode, "", stderr)
    assert process.returncode == 143, stderr
    warned = warning_lines(result)
    assert len(warned) == 1 and "killed during train.x" in warned[0] and "starting again" in warned[0]
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: interrupted by SIGTERM; the partial aenet output in run is kept; rerun "
                      "`pyita aenet run run` to start again"]

    # A user shortens the training (train.in is theirs to edit); the rerun cleans up and finishes.
    train_in = run / "train.in"
    train_in.write_text(train_in.read_text().replace("1000000", "3"))
    time.sleep(0.01)
    done = run_cli("aenet", "run", "run", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert any("was interrupted during train.x" in w for w in warning_lines(done))
    assert not (run / "O.3t.nn-00100").exists() and (run / "results.json").is_file()
