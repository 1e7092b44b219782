"""The experiment's length-sweep figures with both backends' histories (aenet's rows name the training error
differently) and the condition table (the crossover's training error is that of the model evaluated): they
draw every family, and write PNG and SVG."""

from __future__ import annotations

from types import SimpleNamespace

from pyita.experiment import plots
from pyita.experiment.config import parse_config


def test_crossover_budget_and_learning_curves_take_either_backends_history(tmp_path):
    config = parse_config({"experiment": {"data": "sample", "trials": 2},
                           "condition": [{"name": "baseline", "trainer": {"iterations": [15, 450]}},
                                         {"name": "aenet", "backend": "aenet", "trainer": {"iterations": [15, 450]}}]})
    results, table = {}, []
    for c in config.conditions:
        length = c.trainer["iterations"]
        key = "train_energy_mae" if c.backend == "aenet" else "train_mae"
        history = [{"epoch": e, key: 100.0 / e} for e in range(1, 4)]
        for t in range(2):
            results[(t, c.name)] = SimpleNamespace(summary={"history": history, "seconds": length / 10})
        table.append({"condition": c.name, "trials": 2, "energy_mae": 50 / length ** 0.5,
                      "force_mae": 1 / length ** 0.2, "seconds_mean": length / 10, "train_energy_mae": 30 / length})
    written = (plots.crossover(config, results, table, tmp_path) + plots.budget(config, table, tmp_path)
               + plots.learning_curves(config, results, tmp_path))
    assert sorted(p.name for p in written) == sorted(f"{name}.{ext}" for name in ("crossover", "budget",
                                                                                  "learning_curves")
                                                     for ext in ("png", "svg"))
    assert all(p.stat().st_size > 5000 for p in written)
    # one line per family in each panel: baseline and aenet, each through its two lengths
    assert plots._length_families(config) == {"baseline": ["baseline it=15", "baseline it=450"],
                                              "aenet": ["aenet it=15", "aenet it=450"]}
