"""Silent NaN (issue 22): a non-finite number never becomes a model or a result with exit status 0. Energies
given by the user (generate.in TYPES, --types, MAXENERGY), aenet .nn files, extxyz labels and feature-cache
shards are checked where they are read; a training whose loss diverges stops with one line and keeps its last
finite checkpoint; an experiment condition whose errors are NaN gets "no verdict" and the reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from faults import error_line, make_case, nothing_written, run_cli, rutile, tree_hashes, warning_lines
from pyita.descriptors import ChebyshevDescriptor, featurize
from pyita.errors import InputError
from pyita.io.aenet_nn import write_nn
from pyita.model.aenet import potential_to_nn
from pyita.model import Potential, load_potential
from pyita.train import cache
from pyita.train.cache import cached_features

E_TI, E_O = -1626.66972707, -433.23448532
SMALL = {"radial_rc": 4.0, "radial_n": 3, "angular_rc": 3.5, "angular_n": 2}
SMALL_MODEL = ["--radial-rc", 4.0, "--radial-n", 3, "--angular-rc", 3.5, "--angular-n", 2, "--hidden", "3:tanh",
               "-q"]


@pytest.fixture
def case(tmp_path) -> Path:
    """tmp_path/case/generate.in + xsf/ (six rutile cells of six atoms)."""
    return make_case(tmp_path / "case").parent


def refused(folder: Path, out: str, args, *words) -> str:
    """Run the CLI in ``folder``: exit 2, one error line holding ``words``, inputs unchanged, nothing written."""
    before = tree_hashes(folder)
    line = error_line(run_cli(*args, "--out", out, cwd=folder), *words)
    assert tree_hashes(folder) == before
    nothing_written(folder, out)
    return line


# ----------------------------------------------------------------------------- energies the user gives

@pytest.mark.parametrize("value, command", [
    ("nan", ["augment", "generate.in", "--a", 1, "--delta", 0.01, "-q"]),
    ("-Infinity", ["augment", "generate.in", "--a", 1, "--delta", 0.01, "-q"]),
    ("inf", ["aenet", "prepare", "generate.in", "-q"]), ("nan", ["train", "generate.in", *SMALL_MODEL])])
def test_generate_in_types_energy_that_is_not_finite_is_refused_naming_the_line(case, value, command):
    gen = case / "generate.in"
    gen.write_text(gen.read_text().replace("Ti  -1626.66972707", f"Ti  {value}"))
    refused(case, "out", command, "generate.in, line 5", "TYPES energy of Ti", "not a finite number")


@pytest.mark.parametrize("command", [["train", "generate.in", *SMALL_MODEL], ["aenet", "prepare", "generate.in"]])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_types_option_with_a_non_finite_energy_is_refused(case, command, value):
    refused(case, "out", [*command, "--types", f"Ti={value},O={E_O}"], f"--types entry 'Ti={value}'", "finite")


@pytest.mark.parametrize("command", [["train", "generate.in", *SMALL_MODEL], ["aenet", "prepare", "generate.in"]])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_max_energy_that_is_not_finite_is_refused(case, command, value):
    refused(case, "out", [*command, "--max-energy", value], "--max-energy", "finite number")


EXPERIMENT = """[experiment]
data = "{data}"
trials = 2
subset_size = 4
test_fraction = 0.25
workers = 1
{extra}
[trainer]
iterations = 1
hidden = "3:tanh"
"""


@pytest.mark.parametrize("where", ["override", "toml-max-energy", "toml-references"])
def test_experiment_refuses_non_finite_max_energy_or_references_before_its_folder_exists(case, where):
    extra = {"override": "", "toml-max-energy": "max_energy = nan",
             "toml-references": "reference_energies = { Ti = inf, O = -433.2 }"}[where]
    (case / "exp.toml").write_text(EXPERIMENT.format(data=case / "generate.in", extra=extra))
    args = ["experiment", "exp.toml", "-q"] + (["--max-energy", "nan"] if where == "override" else [])
    refused(case, "exp", args, "--max-energy" if where == "override" else "exp.toml", "finite")


# ----------------------------------------------------------------------------------- aenet .nn files

def _nets(folder: Path, edit=None) -> Path:
    """An (untrained) TiO2 potential as aenet .nn files in ``folder``, with ``edit(nnfile)`` applied to each."""
    potential = Potential(ChebyshevDescriptor(["Ti", "O"], **SMALL), "3:tanh", {"Ti": E_TI, "O": E_O}, seed=1)
    folder.mkdir()
    for sym, nnfile in potential_to_nn(potential).items():
        if edit is not None:
            edit(nnfile)
        write_nn(folder / f"{sym}.nn", nnfile)
    return folder


def _set(part: str, field: str, value, index=None):
    def edit(nnfile):
        owner = getattr(nnfile, part)
        if index is None:
            setattr(owner, field, value)
        else:
            getattr(owner, field)[index] = value
    return edit


@pytest.mark.parametrize("edit, words", [
    (_set("trainset", "e_atom", math.nan, 0), ["atomic energies (E_atom)", "nan"]),
    (_set("trainset", "shift", math.inf), ["energy shift", "inf"]),
    (_set("trainset", "scale", 1e-320), ["energy scale", "finite inverse"]),
    (_set("network", "weights", math.nan, 3), ["weights", "nan"]),
    (_set("setup", "sfval_avg", -math.inf, 0), ["feature averages", "-inf"]),
    (_set("setup", "sfparam", math.nan, (0, 1)), ["descriptor parameters", "nan"]),
    (_set("setup", "sfparam", math.inf, (0, 1)), ["descriptor parameters", "inf"]),
    (_set("setup", "sfparam", 3.4, (0, 1)), ["radial_N = 3.4", "not an integer"]),
    (_set("setup", "sfparam", -1.0, (0, 3)), ["angular_N = -1.0", "not an integer"]),
    (_set("setup", "sfparam", 1e6, (0, 1)), ["radial_N = 1000000", "file holds 14 descriptor functions"]),
], ids=["e_atom-nan", "shift-inf", "scale-tiny", "weight-nan", "avg-inf", "radial_n-nan", "radial_n-inf",
        "radial_n-3.4", "angular_n-negative", "radial_n-huge"])
def test_nn_files_with_non_finite_or_absurd_values_are_refused_naming_the_file(tmp_path, edit, words):
    nets = _nets(tmp_path / "nets", edit)
    with pytest.raises(InputError) as caught:
        load_potential(nets)
    assert caught.value.path == str(nets / "O.nn") and all(w in caught.value.problem for w in words), caught.value


@pytest.mark.parametrize("edit, words", [(_set("trainset", "e_atom", math.nan, 0), ["E_atom", "nan"]),
                                         (_set("setup", "sfparam", math.nan, (0, 1)), ["descriptor parameters"])],
                         ids=["e_atom-nan", "radial_n-nan"])
def test_cli_predict_with_nn_files_holding_nan_is_refused(case, edit, words):
    _nets(case / "nets", edit)
    refused(case, "pred", ["predict", "nets", "generate.in", "-q"], "nets/O.nn", *words)


# ----------------------------------------------------------------------------------- labels in extxyz

@pytest.mark.parametrize("label", ["energy", "forces"])
def test_predict_refuses_extxyz_labels_that_are_present_but_not_finite_naming_the_frame(case, label):
    _nets(case / "nets")
    frames = [rutile(k).to_ase() for k in range(3)]
    if label == "energy":
        frames[1].calc.results["energy"] = math.nan
    else:
        frames[1].calc.results["forces"][2, 1] = math.inf
    ase.io.write(case / "data.extxyz", frames, format="extxyz")
    refused(case, "pred", ["predict", "nets", "data.extxyz", "-q"], "data.extxyz[1]",
            "energy nan is not finite" if label == "energy" else "forces contain NaN or inf")


def test_predict_still_accepts_extxyz_without_labels(case):
    _nets(case / "nets")
    ase.io.write(case / "data.extxyz", [rutile(k).copy(energy=None, forces=None).to_ase() for k in range(2)],
                 format="extxyz")
    done = run_cli("predict", "nets", "data.extxyz", "--out", "pred", "-q", cwd=case)
    assert done.returncode == 0, done.stderr
    assert json.loads((case / "pred" / "summary.json").read_text())["structures"] == 2


# --------------------------------------------------------------------------------- feature-cache shards

def _shard(folder: Path) -> Path:
    shards = list(folder.rglob("*.pt"))
    assert len(shards) == 1, shards
    return shards[0]


def _rewrite(shard: Path, change, checksum: bool) -> None:
    data = torch.load(shard, weights_only=True)
    change(data)
    if checksum:   # a shard consistent with its own record, so that only the later checks can catch it
        data["checksum"] = cache._checksum(data["keys"], data["n_atoms"], data["features"])
    torch.save(data, shard)


def _nan_features(data):
    data["features"][4, 2] = math.nan


def _fewer_atoms(data):
    data["n_atoms"][0] -= 1


def _fewer_rows(data):
    data["features"] = data["features"][:-2]
    data["n_atoms"][-1] -= 2


def _flip(data):
    data["features"][0, 0] += 1.0


DAMAGES = {
    "nan-features": lambda shard: _rewrite(shard, _nan_features, checksum=True),
    "sizes-mismatch": lambda shard: _rewrite(shard, _fewer_atoms, checksum=True),
    "atom-count-of-a-structure": lambda shard: _rewrite(shard, _fewer_rows, checksum=True),
    "changed-value": lambda shard: _rewrite(shard, _flip, checksum=False),
    "truncated": lambda shard: shard.write_bytes(shard.read_bytes()[:200]),
    "foreign": lambda shard: shard.write_bytes(b"not a shard"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_cache_shard_is_rebuilt_with_a_warning(tmp_path, damage):
    descriptor = ChebyshevDescriptor(["Ti", "O"], **SMALL)
    structures = [rutile(k) for k in range(3)]
    expected = featurize(descriptor, structures)
    cached_features(descriptor, structures, cache_dir=tmp_path)
    DAMAGES[damage](_shard(tmp_path))
    with pytest.warns(UserWarning, match="failed its integrity check"):
        again = cached_features(descriptor, structures, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(again, expected))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")   # rebuilt: the next run trusts it without a word
        third = cached_features(descriptor, structures, cache_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(third, expected))


def test_cli_train_rebuilds_a_cache_shard_with_nan_features_with_one_warning(case):
    args = ["train", "generate.in", *SMALL_MODEL, "--iterations", 2, "--cache-dir", "cache"]
    assert run_cli(*args, "--out", "a.pt", cwd=case).returncode == 0
    _rewrite(_shard(case / "cache"), _nan_features, checksum=True)
    done = run_cli(*args, "--out", "b.pt", cwd=case)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    warned = [w for w in warning_lines(done) if "feature cache shard" in w]
    assert len(warned) == 1 and "non-finite features" in warned[0], done.stderr
    a, b = (torch.load(case / name, weights_only=True) for name in ("a.pt", "b.pt"))
    assert [row["loss"] for row in a["metadata"]["history"]] == [row["loss"] for row in b["metadata"]["history"]]


# --------------------------------------------------------------------------------- diverging training

def test_cli_train_that_diverges_stops_keeping_a_finite_resumable_checkpoint(case):
    args = ["train", "generate.in", *SMALL_MODEL, "--method", "adam", "--iterations", 4, "--checkpoint-every", 0,
            "--no-cache"]
    done = run_cli(*args, "--learning-rate", "1e200", "--out", "m.pt", cwd=case)
    line = error_line(done, "training diverged", "in epoch 1", "m.pt.ckpt", "--resume", "--learning-rate")
    assert "after epoch 0" in line
    assert not (case / "m.pt").exists() and not (case / "m.history.csv").exists()
    saved = torch.load(case / "m.pt.ckpt", weights_only=True)
    assert saved["epoch"] == 0 and saved["history"] == []
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    resumed = run_cli(*args, "--learning-rate", "1e-3", "--resume", "--out", "m.pt", cwd=case)
    assert resumed.returncode == 0, resumed.stderr
    model = torch.load(case / "m.pt", weights_only=True)
    assert len(model["metadata"]["history"]) == 4
    assert all(math.isfinite(row["loss"]) for row in model["metadata"]["history"])
    assert not (case / "m.pt.ckpt").exists()


@pytest.mark.parametrize("every, kept", [(0, 2), (1e9, 0)])   # a checkpoint every epoch; only the first
def test_trainer_keeps_the_last_finite_checkpoint_when_it_diverges(tmp_path, monkeypatch, every, kept):
    from pyita.train.fit import train
    from pyita.train.trainer import Trainer, TrainingDiverged
    from pyita.train.settings import TrainSettings

    record = Trainer._record

    def diverge_in_epoch_3(self, seconds):
        row = record(self, seconds)
        if row["epoch"] == 3:
            with torch.no_grad():
                next(self.potential.networks.parameters()).fill_(math.nan)
            row["loss"] = math.nan
        return row

    monkeypatch.setattr(Trainer, "_record", diverge_in_epoch_3)
    checkpoint = tmp_path / "m.pt.ckpt"
    settings = TrainSettings.from_flat(iterations=5, hidden="3:tanh", descriptor=SMALL, checkpoint_every=every)
    with pytest.raises(TrainingDiverged, match=rf"loss became nan in epoch 3.*after epoch {kept}\)"):
        train([rutile(k) for k in range(4)], settings=settings, checkpoint=checkpoint, use_cache=False)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] == kept and [row["epoch"] for row in saved["history"]] == list(range(1, kept + 1))
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


# ----------------------------------------------------------------------------------- experiment report

def test_report_gives_no_verdict_for_a_condition_whose_errors_are_not_finite(tmp_path):
    from pyita.experiment.config import parse_config
    from pyita.experiment.report import write_report
    from pyita.experiment.results import result_paths

    raw = {"experiment": {"name": "t", "data": "sample:tio2-md", "trials": 3},
           "condition": [{"name": "baseline"}, {"name": "balanced", "augment": {"a": 1, "delta": 0.01}}]}
    config = parse_config(raw, "<test>")
    rng = np.random.default_rng(0)
    for trial in range(3):
        for condition in config.conditions:
            json_path, npz_path = result_paths(tmp_path, trial, condition.name)
            json_path.parent.mkdir(parents=True, exist_ok=True)
            reference = rng.normal(-100, 1, 4)
            predicted = reference + rng.normal(0, 0.01, 4)
            if condition.name == "balanced" and trial == 1:
                predicted[2] = math.nan   # e.g. its training diverged
            np.savez_compressed(npz_path, energy_ref=reference, energy_pred=predicted, n_atoms=np.full(4, 6),
                                force_errors=rng.normal(0, 0.1, 72))
            json_path.write_text(json.dumps({
                "trial": trial, "condition": condition.name, "seed": trial, "n_test": 4, "seconds": 1.0,
                "history": [{"epoch": 1, "loss": 1.0, "train_mae": 1.0, "train_rmse": 1.0}],
                "n_train_parents": 10, "n_derived": 0, "test_sources": [f"s{k}" for k in range(4)]}))
    summary = write_report(config, tmp_path)
    line, = [ln for ln in summary["plain_summary"] if ln.startswith("balanced")]
    assert "energy — no verdict: the energy predictions of 'balanced' are not finite in trial 1" in line
    assert "forces — no detectable change" in line or "forces — better" in line or "forces — worse" in line
    assert "no verdict" in (tmp_path / "report.md").read_text()
