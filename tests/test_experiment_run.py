"""`pyita experiment` end to end on the bundled sample: paired design, resume after a kill, report."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pyita.experiment.results import load_results
from pyita.experiment.config import parse_config

CONFIG = """
[experiment]
name = "tiny"
data = "sample:tio2-md"
trials = 3
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
name = "balanced"
augment = { strategy = "balanced", a = 2, delta = 0.02 }

[[condition]]
name = "on-the-fly"
augment = { strategy = "random-all", a = 1, delta = 0.01, on_the_fly = true }
"""


def _pyita(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pyita.cli", *args], capture_output=True, text=True,
                          timeout=600, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An experiment killed after its first finished task, then resumed to the end."""
    root = tmp_path_factory.mktemp("exp")
    config = root / "tiny.toml"
    config.write_text(CONFIG)
    out = root / "out"
    proc = subprocess.Popen([sys.executable, "-m", "pyita.cli", "experiment", str(config), "--out", str(out),
                             "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = out / "results" / "trial-000" / "baseline.json"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), proc.stderr.read().decode()
    done_before = {p: p.stat().st_mtime_ns for p in (out / "results").rglob("*.json")}
    assert len(done_before) < 9, "the kill came too late to test resuming"

    refused = _pyita("experiment", str(config), "--out", str(out))
    assert refused.returncode == 2 and "--resume" in refused.stderr

    resumed = _pyita("experiment", str(config), "--out", str(out), "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    return out, config, done_before, resumed


def test_resume_keeps_finished_trials_and_completes(finished):
    out, _, done_before, _ = finished
    for path, mtime in done_before.items():
        assert path.stat().st_mtime_ns == mtime, f"{path} was redone"
    assert len(list((out / "results").rglob("*.json"))) == 9
    assert not list((out / "results").rglob("*.tmp*"))


def test_conditions_share_test_parents_and_initial_seed(finished):
    out, config_path, _, _ = finished
    import tomllib

    config = parse_config(tomllib.loads(config_path.read_text()), config_path)
    results = load_results(config, out)
    for trial in range(3):
        runs = [results[(trial, c.name)].summary for c in config.conditions]
        assert len({tuple(r["test_sources"]) for r in runs}) == 1
        assert len({r["seed"] for r in runs}) == 1
        assert runs[0]["n_derived"] == 0 and runs[1]["n_derived"] == 2 * runs[1]["n_train_parents"]
        # test structures are originals of the sample, never derived ones
        assert all(src.startswith("tio2-md[") for src in runs[0]["test_sources"])
    tests = [set(results[(t, "baseline")].summary["test_sources"]) for t in range(3)]
    assert tests[0] != tests[1]


def test_report_tables_and_figures(finished):
    out, _, _, resumed = finished
    for name in ("report.md", "report.html", "per_trial.csv", "conditions.csv", "comparisons.csv",
                 "energy_errors.csv.gz", "force_errors.csv.gz", "summary.json", "config.toml"):
        assert (out / name).stat().st_size > 0, name
    for fig in ("effects", "violins", "per_trial", "learning_curves"):
        png = (out / "figures" / f"{fig}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        assert (out / "figures" / f"{fig}.svg").read_text().lstrip().startswith("<?xml")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished_tasks"] == 9
    verdicts = {(c["condition"], c["metric"]): c["verdict"] for c in summary["comparisons"]}
    assert len(verdicts) == 4
    assert all(v in ("better", "worse") or v.startswith("no detectable") for v in verdicts.values())
    rows = {(c["condition"], c["metric"]): c for c in summary["comparisons"]}
    for row in rows.values():   # the verdict is the paired t interval's, over the 3 trials
        if row["verdict"] in ("better", "worse"):
            assert (row["ci_high"] < 0) == (row["verdict"] == "better") and not row["ci_low"] < 0 < row["ci_high"]
        else:
            assert row["ci_low"] <= 0 <= row["ci_high"]
    assert [line.split(" (vs ")[0] for line in summary["plain_summary"]] == ["balanced", "on-the-fly"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<table>" in html
    # rendered Markdown, one self-contained page: no raw Markdown, no links to figure files, one Figures heading
    assert "**" not in html and "`" not in html and 'src="figures/' not in html
    assert "<strong>balanced</strong>" in html and html.count("Figures</h2>") == 1 and "Figure images" not in html
    md = (out / "report.md").read_text()
    assert md.index("## Summary") < md.index("## Verdicts") and "- **balanced** (vs baseline, 3 trials)" in md
    # the per-condition MAE in the report equals the mean of the raw per-structure errors
    import csv
    import gzip

    with gzip.open(out / "energy_errors.csv.gz", "rt") as handle:
        raw = [r for r in csv.DictReader(handle) if r["condition"] == "baseline"]
    mae = np.mean([abs(float(r["error_meV_per_atom"])) for r in raw])
    with open(out / "conditions.csv") as handle:
        row = next(r for r in csv.DictReader(handle) if r["condition"] == "baseline")
    assert float(row["energy_mae"]) == pytest.approx(mae)
