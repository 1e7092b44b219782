"""Golden outputs: what `pyita augment`, `pyita aenet prepare` and the experiment tables write for the bundled
sample is pinned byte for byte (checksums; volatile fields such as timings and versions left out), so that a
refactor can show it changed no output. Regenerate with tests/data/golden/make_golden.py only for an intended
change."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent / "data" / "golden"
#: Fields that differ between runs of the same code: timings, versions, worker counts, the Python.
VOLATILE = {"seconds", "python", "workers", "pyita_version", "train_seconds"}


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def digest_folder(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``; JSON records are compared without their volatile fields."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(_stable(json.loads(data)), sort_keys=True).encode()
        out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def _augment_xsf(out: Path) -> None:
    from pyita.augment import AugmentSettings
    from pyita.augment.run import run_augment

    run_augment("sample:tio2-md", out, AugmentSettings(a=2, delta=0.03, seed=3), progress=False, workers=1)


def _augment_extxyz(out: Path) -> None:
    from pyita.augment import AugmentSettings
    from pyita.augment.run import run_augment

    run_augment("sample:tio2-diverse", out, AugmentSettings(a=1.5, delta=0.02, strategy="random-all", seed=7),
                fmt="extxyz", progress=False)


def _augment_sequential(out: Path) -> None:
    from pyita.augment import AugmentSettings
    from pyita.augment.run import run_augment

    run_augment("sample:tio2-diverse", out, AugmentSettings(a=3, delta=0.03, strategy="sequential"),
                only_derived=True, progress=False, workers=1)


def _aenet_prepare(out: Path) -> None:
    from pyita.backends.aenet import run_aenet_prepare

    run_aenet_prepare("sample:tio2-md", out, {"iterations": 15, "max_energy": 1.0}, test_fraction=0.2, seed=4,
                      progress=False)


GOLDEN_RUNS = {"augment-xsf": _augment_xsf, "augment-extxyz": _augment_extxyz,
               "augment-sequential": _augment_sequential, "aenet-prepare": _aenet_prepare}


def run_golden(name: str, out: Path) -> dict[str, str]:
    GOLDEN_RUNS[name](out)
    return digest_folder(out)


EXPERIMENT = """\
[experiment]
name = "golden"
data = "sample:tio2-md"
trials = 3
subset_size = 24
test_fraction = 0.25
seed = 5
workers = 1

[trainer]
iterations = 4
hidden = "4:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "balanced"
augment = { strategy = "balanced", a = 2, delta = 0.02 }

[[condition]]
name = "forces"
trainer = { force_weight = 0.1 }
"""


def experiment_config():
    from pyita.experiment.config import parse_config, parse_toml

    raw = parse_toml(EXPERIMENT, "golden.toml")
    return parse_config(raw, "golden.toml", {}), raw


def tables_of(config, out: Path) -> dict:
    """The experiment's tables as the report writes them, rebuilt from the results in ``out``."""
    from pyita.experiment.report import write_report

    summary = write_report(config, out)
    tables = {name: list(csv.reader(io.StringIO((out / name).read_text())))
              for name in ("per_trial.csv", "conditions.csv", "comparisons.csv")}
    return {**tables, "summary": _stable({k: v for k, v in summary.items() if k != "config"})}


@pytest.mark.parametrize("name", sorted(GOLDEN_RUNS))
def test_outputs_are_unchanged(name, tmp_path):
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert run_golden(name, tmp_path / name) == expected


def test_experiment_tables_are_unchanged(tmp_path):
    config, _ = experiment_config()
    shutil.copytree(GOLDEN / "experiment" / "results", tmp_path / "results")
    expected = json.loads((GOLDEN / "experiment" / "tables.json").read_text())
    assert json.loads(json.dumps(tables_of(config, tmp_path))) == expected
