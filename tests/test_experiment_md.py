"""MD in experiments (the [md] table): the same starts and velocities for every condition of a trial, the MD
metrics per trial, their verdicts, the survival table, resume, and the table's checks."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pyita.errors import PyitaError
from pyita.experiment.config import parse_config, parse_toml
from pyita.experiment.results import load_results, result_paths

CONFIG = """
[experiment]
name = "tiny-md"
data = "sample:tio2-md"
trials = 2
subset_size = 24
test_fraction = 0.25
seed = 5
workers = 1

[trainer]
iterations = 6
hidden = "4:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "twin"
trainer = { iterations = 6 }

[[condition]]
name = "forces"
trainer = { force_weight = 0.1 }

[md]
starts = 2
steps = 30
ensemble = "nve"
timestep = 2.0
temperature = 600
write_every = 10
"""
MD_COLUMNS = ("md_stable_fraction", "md_median_time_to_failure_fs", "md_nve_drift_meV_atom")


def _pyita(*args):
    return subprocess.run([sys.executable, "-m", "pyita.cli", *args], capture_output=True, text=True, timeout=600)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("md-exp")
    config = root / "tiny.toml"
    config.write_text(CONFIG)
    out = root / "out"
    done = _pyita("experiment", str(config), "--out", str(out), "-q")
    assert done.returncode == 0, done.stderr
    return root, config, out


def test_md_metrics_per_trial_and_in_the_summary(finished):
    _, config, out = finished
    rows = _rows(out / "per_trial.csv")
    assert len(rows) == 6
    for row in rows:
        values = [float(row[k]) for k in MD_COLUMNS]
        assert all(np.isfinite(values)) and 0 <= values[0] <= 1 and 0 < values[1] <= 60.0
    cfg = parse_config(parse_toml(config.read_text(), config), config)
    results = load_results(cfg, out)
    for (trial, name), r in results.items():   # the per-trial numbers are those of the per-run arrays
        row = next(x for x in rows if int(x["trial"]) == trial and x["condition"] == name)
        times, stable = r.md["md_time_to_failure_fs"], r.md["md_stable"]
        assert times.shape == stable.shape == (2,)
        assert float(row["md_stable_fraction"]) == pytest.approx(stable.mean())
        assert float(row["md_median_time_to_failure_fs"]) == pytest.approx(np.median(times))
        assert np.all(times[stable] == 60.0)
    summary = json.loads((out / "summary.json").read_text())
    metrics = {(c["condition"], c["metric"]) for c in summary["comparisons"]}
    assert {("forces", "MD stable fraction"), ("forces", "MD median time to failure (fs)"),
            ("forces", "MD NVE drift (meV/atom)")} <= metrics
    assert summary["config"]["md"]["starts"] == 2 and summary["config"]["md"]["reference"] is None
    line = next(x for x in summary["plain_summary"] if x.startswith("forces"))
    assert "MD stability — " in line and "MD time to failure — " in line
    assert "md_survival.png" in (out / "report.md").read_text()


def test_same_starts_and_velocities_for_every_condition_of_a_trial(finished):
    """A condition trained twice under two names runs the same dynamics, number for number; every condition
    of a trial starts from the same structures with the same velocity seed, and trials differ."""
    _, config, out = finished
    cfg = parse_config(parse_toml(config.read_text(), config), config)
    results = load_results(cfg, out)
    for trial in range(2):
        base, twin, forces = (results[(trial, n)] for n in ("baseline", "twin", "forces"))
        for key in ("md_time_to_failure_fs", "md_stable"):
            np.testing.assert_array_equal(base.md[key], twin.md[key])
        assert base.summary["md_nve_drift_meV_atom"] == twin.summary["md_nve_drift_meV_atom"]
        assert base.summary["md_starts"] == forces.summary["md_starts"] == base.summary["test_sources"][:2]
        assert base.summary["md_seed"] == forces.summary["md_seed"] == base.summary["seed"]
    assert results[(0, "baseline")].summary["md_seed"] != results[(1, "baseline")].summary["md_seed"]


def test_survival_table_counts_runs_not_yet_failed(finished):
    _, config, out = finished
    cfg = parse_config(parse_toml(config.read_text(), config), config)
    results = load_results(cfg, out)
    rows = _rows(out / "md_survival.csv")
    assert {r["condition"] for r in rows} == {"baseline", "twin", "forces"}
    assert (out / "figures" / "md_survival.png").is_file() and (out / "figures" / "md_survival.svg").is_file()
    for name in ("baseline", "forces"):
        times = np.concatenate([results[(t, name)].md["md_time_to_failure_fs"] for t in range(2)])
        stable = np.concatenate([results[(t, name)].md["md_stable"] for t in range(2)])
        mine = [r for r in rows if r["condition"] == name]
        assert len(mine) == 101 and float(mine[0]["time_fs"]) == 0.0 and float(mine[-1]["time_fs"]) == 60.0
        for r in mine:
            t = float(r["time_fs"])
            expected = sum(1 for s, f in zip(stable, times) if s or f > t) / len(times)
            assert float(r["fraction_stable"]) == pytest.approx(expected)


def test_resume_gives_the_same_md_numbers(finished, tmp_path):
    _, config, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    for name in ("baseline", "forces"):
        for path in result_paths(copy, 1, name):
            path.unlink()
    resumed = _pyita("experiment", str(config), "--out", str(copy), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    before, after = _rows(out / "per_trial.csv"), _rows(copy / "per_trial.csv")
    for a, b in zip(before, after):
        assert [a[k] for k in MD_COLUMNS] == [b[k] for k in MD_COLUMNS]
    assert (out / "md_survival.csv").read_text() == (copy / "md_survival.csv").read_text()


@pytest.mark.parametrize("table, expected", [
    ("stepz = 10", "unknown [md] key 'stepz'"),
    ("steps = 0", "[md] steps must be an integer ≥ 1"),
    ("steps = \"30\"", "[md] steps must be an integer ≥ 1"),
    ("ensemble = \"npt\"", "[md]: --ensemble must be one of"),
    ("reference = \"no-such-calculator\"", "[md]: "),
])
def test_bad_md_table_is_one_line_naming_the_file(tmp_path, table, expected):
    path = tmp_path / "bad.toml"
    text = CONFIG.split("[md]")[0] + "[md]\n" + table + "\n"
    path.write_text(text)
    with pytest.raises(PyitaError) as info:
        parse_config(parse_toml(text, path), path)
    message = str(info.value)
    assert expected in message and "bad.toml" in message and "\n" not in message


def test_without_md_the_record_has_no_md_key(tmp_path):
    """experiment.json of an experiment without [md] reads as before, so older experiments still resume."""
    text = CONFIG.split("[md]")[0]
    config = parse_config(parse_toml(text, "x.toml"), tmp_path / "x.toml")
    assert config.md is None and "md" not in config.as_dict()
    with_md = parse_config(parse_toml(CONFIG, "x.toml"), tmp_path / "x.toml")
    assert with_md.as_dict()["md"]["steps"] == 30 and with_md.as_dict()["md"]["replicas"] == 1


@pytest.fixture(scope="module")
def sample_models():
    """The sample's two known models, small: energy-only (collapses within ~100 fs at 300 K) and force-trained
    (stable), trained on 40 structures; the last 8 are the starts."""
    from pyita.backends.embedded import train_and_evaluate
    from pyita.sample import load_sample

    structures = load_sample("tio2-md")
    train, test = structures[:40], structures[-8:]
    models = {name: train_and_evaluate(train, [], test, {"iterations": 100, "force_weight": weight}, seed=0).potential
              for name, weight in (("energy", 0.0), ("forces", 0.1))}
    return models, train, test


def _per_seed(potential, train, test, seeds, key):
    from pyita.experiment.md import run_task_md

    table = {"starts": 2, "replicas": 2, "steps": 200, "temperature": 300.0}
    return [run_task_md(table, potential, train, test, seed)[0][key] for seed in seeds]


@pytest.mark.slow
def test_stability_separates_the_energy_only_model_from_the_force_trained_one(sample_models):
    """The metric works: over three velocity seeds the force-trained model is stable in every run and the
    energy-only one in none, and the paired verdict says so."""
    from pyita.experiment.stats import compare

    models, train, test = sample_models
    energy = _per_seed(models["energy"], train, test, [0, 1, 2], "md_stable_fraction")
    forces = _per_seed(models["forces"], train, test, [0, 1, 2], "md_stable_fraction")
    assert energy == [0.0, 0.0, 0.0] and forces == [1.0, 1.0, 1.0]
    assert compare("forces", "MD stable fraction", energy, forces, higher_is_better=True).verdict == "better"
    assert compare("energy", "MD stable fraction", forces, energy, higher_is_better=True).verdict == "worse"


@pytest.mark.slow
def test_null_check_other_velocity_seeds_give_no_verdict(sample_models):
    """The same model with other velocity seeds: its time to failure varies from seed to seed, and the rule
    finds no difference."""
    from pyita.experiment.stats import compare

    models, train, test = sample_models
    first = _per_seed(models["energy"], train, test, [0, 1, 2], "md_median_time_to_failure_fs")
    other = _per_seed(models["energy"], train, test, [10, 11, 12], "md_median_time_to_failure_fs")
    assert first != other and max(first + other) < 200.0
    row = compare("energy, other seeds", "MD median time to failure (fs)", first, other, higher_is_better=True)
    assert row.verdict.startswith("no detectable difference")


def test_trajectory_error_figure_only_with_reference_errors(tmp_path):
    """No reference calculator: no trajectory errors (NaN) and no figure; with them, one PNG and one SVG."""
    from types import SimpleNamespace

    from pyita.experiment import plots

    config = SimpleNamespace(conditions=[SimpleNamespace(name="a"), SimpleNamespace(name="b")])
    rows = [{"condition": c, "trial": t, "force_mae": 0.1 * (t + 1), "md_force_mae_eV_A": float("nan")}
            for c in ("a", "b") for t in range(3)]
    assert plots.trajectory_errors(config, rows, tmp_path / "none") == [] and not (tmp_path / "none").exists()
    for row in rows:
        row["md_force_mae_eV_A"] = 3 * row["force_mae"]
    files = plots.trajectory_errors(config, rows, tmp_path / "figures")
    assert [f.name for f in files] == ["md_trajectory_errors.png", "md_trajectory_errors.svg"]
    assert all(f.stat().st_size > 1000 for f in files)
