"""The A/A check: a condition that differs from the baseline only in its initial weights
(``init_seed_offset``) shares everything else, is not taken for the baseline, and comes out "no detectable
difference" on the bundled MD sample."""

import json
import tomllib

import numpy as np
import pytest

from pyita.experiment.config import parse_config
from pyita.experiment.report import write_report
from pyita.experiment.results import load_results
from pyita.experiment.tasks import run_trials

CONFIG = """
[experiment]
name = "aa-tiny"
data = "sample:tio2-md"
trials = 8
subset_size = 40
test_fraction = 0.25
seed = 11
workers = 1

[trainer]
iterations = 12
hidden = "4:tanh"

[[condition]]
name = "baseline"

[[condition]]
name = "baseline, other initial weights"
init_seed_offset = 1
"""


@pytest.fixture(scope="module")
def aa(tmp_path_factory):
    out = tmp_path_factory.mktemp("aa") / "out"
    out.mkdir()
    raw = tomllib.loads(CONFIG)
    config = parse_config(raw, "aa-tiny.toml")
    run = run_trials(config, out, progress_enabled=False, inline=True)
    assert not run.missing
    return config, out, write_report(config, out)


def test_aa_condition_is_not_the_baseline(aa):
    config, _, summary = aa
    assert [c.is_baseline for c in config.conditions] == [True, False]
    assert {row["baseline"] for row in summary["comparisons"]} == {"baseline"}
    assert len(summary["comparisons"]) == 2


def test_aa_changes_only_the_initial_weights(aa):
    config, out, _ = aa
    results = load_results(config, out)
    for trial in range(config.trials):
        base, other = results[(trial, "baseline")], results[(trial, "baseline, other initial weights")]
        assert base.summary["test_sources"] == other.summary["test_sources"]
        assert base.summary["seed"] == other.summary["seed"]
        assert other.summary["init_seed"] == base.summary["seed"] + 1 and "init_seed" not in base.summary
        assert base.summary["n_train_parents"] == other.summary["n_train_parents"]
        assert not np.array_equal(base.energy_errors, other.energy_errors)   # other weights, other model


def test_aa_gives_no_detectable_difference(aa):
    _, out, summary = aa
    verdicts = [row["verdict"] for row in summary["comparisons"]]
    assert all(v.startswith("no detectable difference at 8 trials") for v in verdicts), verdicts
    assert all(row["ci_low"] < 0 < row["ci_high"] for row in summary["comparisons"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["plain_summary"][0].startswith("baseline, other initial weights (vs baseline, 8 trials): "
                                                "energy — no detectable change")


def test_init_seed_offset_changes_only_the_initial_weights(monkeypatch):
    """In the embedded backend the offset reaches the initial weights and nothing else: the validation split,
    the seed of batches and augmentation draws, and every other setting stay as they were."""
    from pyita.backends import embedded
    from pyita.io import read_structures
    from pyita.train import fit

    structures = read_structures("sample:tio2-md")[:14]
    seen = []
    real_train, real_potential = embedded.train, fit.Potential

    def spy_train(train_set, validation, settings, **kwargs):
        seen.append({"train": [s.source for s in train_set], "validation": [s.source for s in validation],
                     "settings": settings.as_dict()})
        return real_train(train_set, validation, settings, **kwargs)

    def spy_potential(*args, seed, **kwargs):
        seen[-1]["weights_seed"] = seed
        return real_potential(*args, seed=seed, **kwargs)

    monkeypatch.setattr(embedded, "train", spy_train)
    monkeypatch.setattr(fit, "Potential", spy_potential)
    trainer = {"iterations": 2, "hidden": "3:tanh", "early_stopping": 5, "method": "adam", "batch_size": 4}
    augment = {"strategy": "balanced", "a": 1, "delta": 0.02, "on_the_fly": True}
    runs = [embedded.train_and_evaluate(structures[:10], [], structures[10:], trainer, augment, seed=42,
                                        init_seed_offset=offset) for offset in (0, 0, 3)]
    first, again, other = seen
    assert first == again and np.array_equal(runs[0].energy_pred, runs[1].energy_pred)
    assert first["weights_seed"] == 42 and other["weights_seed"] == 45
    assert other["train"] == first["train"] and other["validation"] == first["validation"]
    assert other["settings"] == {**first["settings"], "init_seed": 45}
    assert first["settings"]["init_seed"] is None and other["settings"]["seed"] == 42
    assert not np.array_equal(runs[0].energy_pred, runs[2].energy_pred)
