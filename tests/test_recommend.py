"""`pyita recommend` end to end on the bundled sample: refusals before any output, a race that finishes with a
trained potential and its aenet networks, and a run killed mid-round that resumes to the same decision."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import pytest

from faults import cli_command, cli_env, run_cli
from pyita.errors import SettingError
from pyita.recommend import RecommendSettings, candidate_recipes

#: Two recipes besides energy only, short trainings: two rounds of 9 tasks on the 150 structures of the sample.
SMALL = ["--recipes", "forces f=0.1,parent-child w=1", "--iterations", "18", "--trials", "3", "--max-rounds", "2",
         "--workers", "1", "-q"]


@pytest.mark.parametrize("bad, message", [
    ({"trials": 2}, "--trials"), ({"objective": "speed"}, "--objective"), ({"budget_minutes": 0}, "--budget-minutes"),
    ({"budget_minutes": float("nan")}, "--budget-minutes"), ({"iterations": 5}, "--iterations"),
    ({"test_fraction": 1.0}, "--test-fraction")])
def test_settings_are_checked_when_made(bad, message):
    with pytest.raises(SettingError, match=message):
        RecommendSettings(**{"data": "sample:tio2-md", "budget_minutes": 5, **bad})


def test_every_recipe_is_a_valid_experiment_condition():
    from pyita.experiment.config import parse_config

    recipes = candidate_recipes(0.02)
    config = parse_config({"experiment": {"data": "sample:tio2-md"}, "condition": [r.condition() for r in recipes]})
    assert [c.name for c in config.conditions] == [r.name for r in recipes]
    assert config.conditions[0].is_baseline and not any(c.is_baseline for c in config.conditions[1:])
    assert recipes[1].augment["delta"] == 0.02


def _energies_only(path):
    from ase.io import write

    from pyita.sample import load_sample

    frames = []
    for s in load_sample("tio2-md")[:12]:
        atoms = s.to_ase()
        atoms.info = {"energy": s.energy}
        atoms.calc = None
        frames.append(atoms)
    write(path, frames, format="extxyz")


@pytest.mark.parametrize("args, message", [
    (["sample:tio2-md", "--budget-minutes", "0.0001"], "too small for one round"),
    (["sample:tio2-md", "--budget-minutes", "5", "--recipes", "forces f=0.3"], "--recipes: unknown 'forces f=0.3'"),
    (["energies.xyz", "--budget-minutes", "5", "--objective", "energy"], "energies.xyz[0]: structure has no forces: "
                                                                         "every recipe but energy only needs"),
    (["sample:tio2-md", "--budget-minutes", "5", "--trials", "2"], "--trials"),
])
def test_bad_input_is_refused_in_one_line_before_any_output(tmp_path, args, message):
    _energies_only(tmp_path / "energies.xyz")
    result = run_cli("recommend", *args, "--out", "rec", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") <= 2 and "Traceback" not in result.stderr   # a warning line at most
    assert not (tmp_path / "rec").exists()


def test_a_folder_not_its_own_is_refused_and_left_alone(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "notes.txt").write_text("mine")
    for extra, message in (([], "is not empty"), (["--resume"], "holds no recommend.json")):
        result = run_cli("recommend", "sample:tio2-md", "--budget-minutes", "5", *SMALL, *extra, "--out", "rec",
                         cwd=tmp_path)
        assert result.returncode != 0 and message in result.stderr, result.stderr
    assert [p.name for p in (tmp_path / "rec").iterdir()] == ["notes.txt"]


def _decision(folder):
    record = json.loads((folder / "recommendation.json").read_text())
    return (record["recipe"], record["stopped_because"],
            [(r["round"], r["iterations"], r["recipes"], r["values"], r["decision"]) for r in record["rounds"]])


@pytest.mark.slow
def test_a_race_killed_mid_round_resumes_to_the_same_decision_and_potential(tmp_path):
    whole = run_cli("recommend", "sample:tio2-md", "--budget-minutes", "30", *SMALL, "--out", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    record = json.loads((tmp_path / "whole" / "recommendation.json").read_text())
    assert record["settings"]["data"] == "sample:tio2-md" and record["seed"] == 0 and record["pyita_version"]
    assert [r["recipes"] for r in record["rounds"]][0] == ["energy only", "parent-child w=1", "forces f=0.1"]
    assert record["recipe"] in record["rounds"][-1]["recipes"]
    values = record["rounds"][0]["values"]
    assert all(len(v) == 3 and np.all(np.isfinite(v)) for v in values.values())
    report = (tmp_path / "whole" / "report.md").read_text()
    assert report.startswith(f"# Recommendation: {record['recipe']}\n\nUse {record['recipe']!r}")
    assert record["reproduce"] in report and "--recipes 'forces f=0.1,parent-child w=1'" in record["reproduce"]
    networks = sorted(p.name for p in (tmp_path / "whole" / "nn").glob("*.nn"))
    assert networks == ["O.15t-15t.nn", "Ti.15t-15t.nn"]

    process = subprocess.Popen(cli_command("recommend", "sample:tio2-md", "--budget-minutes", "30", *SMALL,
                                           "--out", "cut"), cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    results = tmp_path / "cut" / "rounds" / "round-1" / "results"
    try:
        deadline = time.time() + 120
        while len(list(results.glob("trial-*/*.json"))) < 4 and process.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.communicate()
    assert not (tmp_path / "cut" / "recommendation.json").exists()
    resumed = run_cli("recommend", "sample:tio2-md", "--budget-minutes", "30", *SMALL, "--resume", "--out", "cut",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _decision(tmp_path / "cut") == _decision(tmp_path / "whole")
    for name in networks:   # the same final potential, to the last digit of aenet's files
        assert (tmp_path / "cut" / "nn" / name).read_bytes() == (tmp_path / "whole" / "nn" / name).read_bytes()
    again = run_cli("recommend", "sample:tio2-md", "--budget-minutes", "31", *SMALL, "--resume", "--out", "cut",
                    cwd=tmp_path)
    assert again.returncode != 0 and "other settings (budget_minutes)" in again.stderr


def test_each_objective_reads_its_own_column_and_md_rounds_run_dynamics():
    from pyita.experiment.config import parse_config
    from pyita.recommend.rounds import objective_values, round_config, round_length, toml_text
    from pyita.experiment.config import parse_toml

    rows = [{"trial": t, "condition": name, "energy_mae": e, "force_mae": f, "md_stable_fraction": s}
            for name, values in (("a", [(4.0, 0.25, 0.5), (1.0, 0.16, 1.0), (9.0, 0.04, 0.0)]),
                                 ("b", [(2.0, 0.5, 1.0), (3.0, 0.12, 0.5), (1.0, 1.0, 1.0)]))
            for t, (e, f, s) in reversed(list(enumerate(values)))]   # rows out of trial order
    expect = {"energy": {"a": [4, 1, 9], "b": [2, 3, 1]}, "forces": {"a": [0.25, 0.16, 0.04], "b": [0.5, 0.12, 1]},
              "both": {"a": [1.0, 0.4, 0.6], "b": [1.0, 0.6, 1.0]}, "md": {"a": [0.5, 1, 0], "b": [1, 0.5, 1]}}
    for objective, wanted in expect.items():
        settings = RecommendSettings("sample:tio2-md", 5, objective=objective)
        got = objective_values(settings, rows, ["a", "b"])
        for name in wanted:
            np.testing.assert_allclose(got[name], wanted[name], rtol=1e-12)
    settings = RecommendSettings("sample:tio2-md", 5, objective="md", iterations=90)
    assert [round_length(settings, k) for k in (1, 2, 3, 4)] == [10, 30, 90, 90]
    raw = round_config(settings, 2, candidate_recipes()[:3], workers=2)
    assert parse_toml(toml_text(raw), "round.toml") == raw   # the config.toml a round writes reads back as made
    config = parse_config(raw, "round.toml")
    assert config.md["starts"] == 4 and config.trainer == {"iterations": 30} and config.trials == settings.trials
    assert config.seed == 2 * 7919 and [c.name for c in config.conditions] == [r.name for r in candidate_recipes()[:3]]


def test_a_scheduler_that_cannot_be_reached_is_refused_before_any_output(tmp_path):
    result = run_cli("recommend", "sample:tio2-md", "--budget-minutes", "5", *SMALL, "--scheduler",
                     "tcp://127.0.0.1:9", "--out", "rec", cwd=tmp_path, timeout=120,
                     DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s")
    assert result.returncode != 0 and "cannot reach the Dask scheduler" in result.stderr, result.stderr
    assert not (tmp_path / "rec").exists()
