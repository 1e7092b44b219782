"""`pyita train` and `pyita predict` as a user runs them: real subprocesses, real files, kills and resumes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import pytest
import torch

from pyita.model import Potential
from trainer_data import SMALL_DESCRIPTOR, emt_molecule, emt_structures

SMALL = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL_DESCRIPTOR.items()] + ["--hidden", "5:tanh,5:tanh"]


def pyita(*args, cwd: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYITA_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pyita.cli", *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"pyita {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "emt.extxyz"
    ase.io.write(path, [s.to_ase() for s in emt_structures(20)], format="extxyz")
    return path


def test_train_then_predict(tmp_path, data_file):
    pyita("train", data_file, "--iterations", 5, "--out", "m.pt", "--seed", 4, "--test-fraction", 0.2, "-q",
          *SMALL, cwd=tmp_path)
    model = Potential.load(tmp_path / "m.pt")
    meta = model.metadata
    assert meta["seed"] == 4 and meta["settings"]["iterations"] == 5 and meta["pyita_version"]
    assert len(meta["test_sources"]) == 4 and meta["counts"]["train"] == 16
    assert meta["test_errors"]["energy_meV_per_atom"]["n"] == 4
    with open(tmp_path / "m.history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in history] == [1, 2, 3, 4, 5] and float(history[-1]["test_rmse"]) > 0
    pyita("predict", "m.pt", data_file, "--out", "pred", "-q", cwd=tmp_path)
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["energy_meV_per_atom"]["n"] == 20 and summary["force_components_eV_per_A"]["n"] == 20 * 4 * 3
    # The same test structures give the same errors in predict as recorded at training time.
    with open(tmp_path / "pred" / "predictions.csv") as handle:
        rows = {r["source"]: float(r["error_meV_per_atom"]) for r in csv.DictReader(handle)}
    test_errors = [abs(rows[s]) for s in meta["test_sources"]]
    assert sum(test_errors) / 4 == pytest.approx(meta["test_errors"]["energy_meV_per_atom"]["mae"], rel=1e-9)


def test_predict_says_which_structures_the_model_was_trained_on(tmp_path, data_file):
    result = pyita("train", data_file, "--iterations", 3, "--out", "m.pt", "--seed", 5, "--test-fraction", 0.25,
                   "--validation-fraction", 0.15, "-q", *SMALL, cwd=tmp_path)
    meta = Potential.load(tmp_path / "m.pt").metadata
    result = pyita("predict", "m.pt", data_file, "--out", "pred", "-q", cwd=tmp_path)
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    counts = meta["counts"]
    assert summary["seen_in_model_data"] == {"training": counts["train"], "validation": counts["validation"]}
    assert f"{counts['train']} in its training set and {counts['validation']} in its validation set" in result.stdout
    with open(tmp_path / "pred" / "predictions.csv") as handle:
        seen = {r["source"]: r["seen_in"] for r in csv.DictReader(handle)}
    assert {s for s, part in seen.items() if not part} == set(meta["test_sources"])
    assert {s for s, part in seen.items() if part == "validation"} == set(meta["validation_sources"])
    # the unseen structures are the held-out test set: their errors are those `pyita train` reported
    for key in ("mae", "rmse", "n"):
        assert summary["unseen"]["energy_meV_per_atom"][key] == pytest.approx(
            meta["test_errors"]["energy_meV_per_atom"][key], rel=1e-9)
    frames = ase.io.read(tmp_path / "pred" / "predictions.extxyz", index=":")
    assert sorted(f.info.get("seen_in", "") for f in frames) == sorted(seen.values())
    # structures the model never met, and a model without fingerprints: no note, no column
    fresh = tmp_path / "fresh.extxyz"
    ase.io.write(fresh, [s.to_ase() for s in emt_structures(3, seed=99)], format="extxyz")
    result = pyita("predict", "m.pt", fresh, "--out", "pred2", "-q", cwd=tmp_path)
    assert "note:" not in result.stdout
    assert json.loads((tmp_path / "pred2" / "summary.json").read_text())["seen_in_model_data"] == {
        "training": 0, "validation": 0}
    model = Potential.load(tmp_path / "m.pt")
    del model.metadata["fingerprints"]
    model.save(tmp_path / "old.pt")
    pyita("predict", "old.pt", data_file, "--out", "pred3", "-q", cwd=tmp_path)
    with open(tmp_path / "pred3" / "predictions.csv") as handle:
        assert "seen_in" not in next(csv.reader(handle))


def test_train_on_the_bundled_sample(tmp_path):
    result = pyita("train", "sample:tio2-md", "--iterations", 2, "--out", "s.pt", "-q", cwd=tmp_path)
    assert "test  energy MAE/RMSE" in result.stdout
    assert Potential.load(tmp_path / "s.pt").species == ("Ti", "O")


def _checkpoint_epoch(path: Path) -> int:
    return torch.load(path, weights_only=True)["epoch"]


def test_killed_run_resumes_where_it_stopped(tmp_path, data_file):
    args = ["train", data_file, "--out", "k.pt", "--checkpoint-every", 0, "-q", "--method", "adam",
            "--batch-size", 2, *SMALL]
    env = {**os.environ, "PYITA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pyita.cli", *map(str, args), "--iterations", "100000"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "k.pt.ckpt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (checkpoint.exists() and _checkpoint_epoch(checkpoint) >= 3):
        time.sleep(0.2)
    process.kill()  # SIGKILL: no chance to clean up
    process.wait()
    assert not (tmp_path / "k.pt").exists()
    done = _checkpoint_epoch(checkpoint)
    assert done >= 3
    pyita(*args, "--resume", "--iterations", done + 2, cwd=tmp_path)
    history = Potential.load(tmp_path / "k.pt").metadata["history"]
    assert [row["epoch"] for row in history] == list(range(1, done + 3))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path, data_file, signum):
    """The first Ctrl-C or SIGTERM finishes the epoch, saves a checkpoint and exits 128 + the signal number
    (130/143, as the README says) with one line saying where the progress is."""
    env = {**os.environ, "PYITA_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "pyita.cli", "train", str(data_file), "--out", "t.pt",
                                "--iterations", "100000", "--checkpoint-every", "1000", "-q", *SMALL],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    history = tmp_path / "t.pt.ckpt"
    deadline = time.monotonic() + 120
    # Wait until training runs (the cache shard appears once features exist), then ask it to stop.
    while time.monotonic() < deadline and not list((tmp_path / "cache").rglob("*.pt")):
        time.sleep(0.2)
    time.sleep(1.0)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"interrupted by {signal.Signals(signum).name}; training stopped after epoch" \
        in errors[0] and "--resume" in errors[0] and "Traceback" not in stderr
    assert history.exists() and _checkpoint_epoch(history) >= 1


def test_user_errors_are_one_clear_line(tmp_path, data_file):
    cases = [
        (["train", tmp_path / "missing.xyz"], "no such file"),
        (["train", data_file, "--patience", 3], "early stopping (patience) needs a validation set"),
        (["train", data_file, "--force-weight", 1, "--force-fraction", 0], "force fraction must be in (0, 1]"),
        (["train", data_file, "--weight-init", "xavier"], "'--weight-init': 'xavier' is not one of 'aenet', 'pytorch'"),
        (["train", data_file, "--force-weight", 1, "--force-fraction", 0.5, "--force-fraction-of", "pairs"],
         "'--force-fraction-of': 'pairs' is not one of 'structures', 'atoms'"),
    ]
    (tmp_path / "exists.pt").write_text("x")
    cases.append((["train", data_file, "--out", "exists.pt"], "exists"))
    cases.append((["predict", "exists.pt", data_file], "not a PyITA model"))
    ase.io.write(tmp_path / "mol.extxyz", emt_molecule().to_ase(), format="extxyz")
    cases.append((["train", tmp_path / "mol.extxyz"], "1 original structure cannot be split"))
    for args, message in cases:
        result = pyita(*args, cwd=tmp_path, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
