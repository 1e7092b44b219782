"""Progress and logs as they reach a user without a terminal (nohup, CI, tee) and with one at 80 columns; numbers
with enough digits; JSON outputs that JSON readers accept; plots that leave the caller's matplotlib alone."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from pyita.io.records import json_text
from pyita.progress import PLAIN_EVERY, PlainProgress, duration, progress_bar, rate, sig

ROOT = Path(__file__).resolve().parent.parent

TINY = """
[experiment]
name = "tiny"
data = "sample:tio2-md"
trials = 2
subset_size = 16
test_fraction = 0.25
seed = 5
workers = 1

[trainer]
iterations = 3
hidden = "3:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "balanced"
augment = { strategy = "balanced", a = 1, delta = 0.02 }
"""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_most_every_30_s_and_always_the_last():
    clock = Clock()
    plain = PlainProgress(8, "experiment", "tasks", show=False, clock=clock)
    assert PLAIN_EVERY == 30 and plain.every == PLAIN_EVERY
    for at in (10, 20):                 # finished tasks within the first 30 s: no line yet
        clock.now = 1000 + at
        plain.advance(1)
    assert plain.lines == []
    clock.now = 1090                    # 3 of 8 after 90 s: 2 per minute, 5 left → 2m 30s
    plain.advance(1, last="trial 1 baseline: 12 s")
    assert plain.lines == ["experiment: 3/8 tasks, 2/min, ETA 2m 30s — last trial 1 baseline: 12 s"]
    clock.now = 1100                    # 10 s after the last line: none
    plain.advance(1)
    clock.now = 1125                    # 35 s after it: one
    plain.advance(1)
    assert len(plain.lines) == 2 and plain.lines[1].startswith("experiment: 5/8 tasks, 2.4/min, ETA 1m 15s")
    clock.now = 1126
    plain.advance(1)
    clock.now = 1127
    plain.advance(2)                    # the last: always, with the time taken
    assert plain.lines[-1] == "experiment: 8/8 tasks, 3.78/min, done in 2m 07s — last trial 1 baseline: 12 s"
    assert len(plain.lines) == 3


def test_resumed_steps_count_but_not_in_the_rate():
    clock = Clock()
    plain = PlainProgress(100, "train", "epochs", show=False, clock=clock, every=0)
    plain.advance(40, before=True)      # a resumed run's earlier epochs
    clock.now += 10
    plain.advance(20, train="1.5/2.1")
    assert plain.lines == ["train: 60/100 epochs, 2/s, ETA 20s — train 1.5/2.1"]


def test_numbers_keep_their_digits():
    assert sig(0.02) == "0.02" and sig(0.0213456) == "0.0213" and sig(0.000123) == "0.000123"
    assert sig(12.345) == "12.3" and sig(1.0) == "1" and sig(0.0) == "0"
    assert sig(1234.5) == "1234" and sig(-0.02) == "-0.02" and sig(float("nan")) == "nan"
    assert f"{0.002:.2f}" == "0.00" and sig(0.002) == "0.002"   # what the closing lines printed before
    assert duration(24.4) == "24s" and duration(144) == "2m 24s" and duration(3900) == "1h 05m"
    assert rate(2.1 / 60) == "2.1/min" and rate(12.5) == "12.5/s" and rate(None) == "–/s"


def _frames(text: str) -> list[str]:
    """The lines a terminal would show, control sequences taken out."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", text).replace("\r", "\n")
    return [line for line in plain.split("\n") if line.strip()]


def test_the_bar_keeps_count_and_eta_at_80_columns():
    console = Console(width=80, force_terminal=True, file=io.StringIO(), color_system=None)
    with progress_bar(500, "train", "epochs", console=console) as advance:
        advance(100)
        clock = __import__("time")
        clock.sleep(0.3)
        advance(23, **{"MAE/RMSE meV/atom: train": "12.3/15.7", "val": "13.4/16.8", "test": "14.1/17.0"})
    last = _frames(console.file.getvalue())[-1]
    assert len(last) <= 80, last
    assert re.match(r"train ━+.* 123/500 epochs [\d.]+/s ETA (\d+m )?\d+s MAE/RMSE meV/atom", last), last
    assert last.endswith("…"), last    # the status is what gives way, with an ellipsis


def test_a_wide_terminal_shows_everything():
    console = Console(width=160, force_terminal=True, file=io.StringIO(), color_system=None)
    with progress_bar(10, "featurizing", "structures", console=console) as advance:
        advance(10, note="done")
    last = _frames(console.file.getvalue())[-1]
    assert re.search(r"featurizing ━+ 10/10 structures \S+ done in \d+s note done$", last.rstrip()), last


def test_experiment_without_a_terminal_prints_plain_progress(tmp_path):
    """stdout and stderr to a file, as under nohup: progress lines instead of nothing (-v: one per task)."""
    (tmp_path / "tiny.toml").write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYITA_CACHE": str(tmp_path / "cache")}
    with open(tmp_path / "nohup.out", "w") as log:
        done = subprocess.run([sys.executable, "-m", "pyita", "experiment", "tiny.toml", "--out", "out", "-v"],
                              cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              timeout=600)
    text = (tmp_path / "nohup.out").read_text()
    assert done.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("experiment: ")]
    assert len(lines) == 4, text
    for k, line in enumerate(lines[:3], start=1):
        assert re.fullmatch(rf"experiment: {k}/4 tasks, [\d.]+/(s|min), ETA (\d+m )?\d+s — last trial \d "
                            r"(baseline|balanced): \d+ s", line), line
    assert re.fullmatch(r"experiment: 4/4 tasks, [\d.]+/(s|min), done in \d+s — last trial 1 balanced: \d+ s",
                        lines[3]), lines[3]
    assert "\x1b[" not in text and "━" not in text     # no bar, no control codes in a log
    assert "report: out/report.md and out/report.html" in text


def test_on_the_fly_training_says_derived_are_drawn_fresh(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYITA_CACHE": str(tmp_path / "cache"),
           "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "pyita", "train", "sample:tio2-md", "--iterations", "2", "--hidden",
                           "2:tanh", "--augment-a", "1", "--augment-delta", "0.02", "--on-the-fly", "--out", "m.pt",
                           "-q"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert re.search(r"trained on \d+ structures \(derived drawn fresh each epoch\)", done.stdout), done.stdout
    assert "(0 derived)" not in done.stdout
    errors = re.search(r"train energy MAE/RMSE (\S+)/(\S+) meV/atom", done.stdout)
    assert all(float(x) > 0 and len(x.replace("-", "").replace(".", "").lstrip("0")) <= 3 for x in errors.groups())


def _refuse(constant: str):
    raise ValueError(f"not JSON: {constant}")


def test_json_outputs_hold_null_never_nan(tmp_path):
    summary = {"mae": float("nan"), "rmse": np.float32("inf"), "n": np.int64(3), "ok": 1.5,
               "rows": [{"x": -math.inf}, (np.float64("nan"), 2.0)], "array": np.array([1.0, np.nan])}
    text = json_text(summary, indent=1)
    assert text.endswith("\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text, parse_constant=_refuse) == {"mae": None, "rmse": None, "n": 3, "ok": 1.5,
                                                        "rows": [{"x": None}, [None, 2.0]], "array": [1.0, None]}
    assert json_text({"a": 1.0}, indent=2) == json.dumps({"a": 1.0}, indent=2) + "\n"   # finite: as before


def test_experiment_summary_with_nan_is_strict_json(tmp_path):
    """The report's summary.json of an experiment whose statistics hold NaN (one trial: no interval)."""
    from pyita.experiment.results import load_results

    (tmp_path / "tiny.toml").write_text(TINY.replace("trials = 2", "trials = 1"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYITA_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "pyita", "experiment", "tiny.toml", "--out", "out", "-q"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "out" / "summary.json").read_text()
    assert "NaN" not in text
    json.loads(text, parse_constant=_refuse)
    assert "null" in text   # one trial: the statistics that need two are missing, and say so
    for path in (tmp_path / "out").rglob("*.json"):
        json.loads(path.read_text(), parse_constant=_refuse)
    assert load_results is not None


PLOT_SCRIPT = """
import matplotlib
before = matplotlib.get_backend()
import pyita.experiment.plots as plots
import pyita.check.report as report
from pathlib import Path
out = Path({out!r})
tests = [dict(metric="energy MAE (meV/atom)", condition="aug", baseline="baseline", verdict="better",
              percent_difference=-10.0, percent_ci_low=-15.0, percent_ci_high=-5.0)]
paths = plots.effects(tests, out)
import sys
print(before, matplotlib.get_backend(), len(paths), "matplotlib.pyplot" in sys.modules)
"""


@pytest.mark.parametrize("backend", ["pdf", "svg"])
def test_plots_leave_the_matplotlib_backend_alone(tmp_path, backend):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": backend}
    done = subprocess.run([sys.executable, "-c", PLOT_SCRIPT.format(out=str(tmp_path / "figs"))], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, after, count, pyplot = done.stdout.split()
    assert before == after == backend and count == "2" and pyplot == "False"
    assert (tmp_path / "figs" / "effects.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "figs" / "effects.svg").read_text().lstrip().startswith("<?xml")


def test_a_task_result_with_undefined_numbers_reads_back_as_nan(tmp_path):
    """A task's JSON holds null for NaN; read back, the analysis sees NaN again (means stay NaN, not errors)."""
    from pyita.experiment.results import TaskResult

    summary = {"trial": 0, "condition": "c", "seed": 1, "n_test": 1, "seconds": 2.0, "taylor_signal_meV_atom": None,
               "train_energy_mae": float("nan"), "train_energy_rmse": 1.5,
               "history": [{"epoch": 1, "train_energy_mae": 3.0, "test_energy_mae": float("nan")}]}
    (tmp_path / "c.json").write_text(json_text(summary, indent=1))
    np.savez_compressed(tmp_path / "c.npz", energy_ref=np.array([-10.0]), energy_pred=np.array([-9.9]),
                        n_atoms=np.array([2]), force_errors=np.zeros(6))
    assert "NaN" not in (tmp_path / "c.json").read_text()
    loaded = TaskResult.load(tmp_path / "c.json", tmp_path / "c.npz").summary
    assert math.isnan(loaded["train_energy_mae"]) and loaded["train_energy_rmse"] == 1.5
    assert math.isnan(loaded["history"][0]["test_energy_mae"]) and loaded["history"][0]["train_energy_mae"] == 3.0
    assert loaded["taylor_signal_meV_atom"] is None   # no derived structures: none, as written
