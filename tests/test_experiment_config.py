"""Experiment configs and presets: parsing, sweeps, validation, and the paired split."""

import warnings

import numpy as np
import pytest

from pyita.errors import InputError
from pyita.experiment.config import PRESETS, parse_config, parse_toml, read_config_text
from pyita.experiment.protocol import trial_split


@pytest.mark.parametrize("name", PRESETS)
def test_presets_parse(name):
    text, path = read_config_text(preset=name)
    config = parse_config(parse_toml(text, path), path)
    assert config.conditions[0].is_baseline
    assert config.trials >= 1


def test_seed_500_matches_the_paper():
    text, path = read_config_text(preset="seed-500")
    c = parse_config(parse_toml(text, path), path)
    assert (c.subset_size, c.trials, c.test_fraction, c.max_energy) == (500, 5, 0.1, 1.0)
    assert c.trainer["iterations"] == 15 and c.trainer["hidden"] == "15:tanh,15:tanh"
    aug = c.conditions[1].augment
    assert (aug["strategy"], aug["a"], aug["delta"]) == ("sequential", 6, 0.03)


def test_sweep_expands_and_baseline_is_added():
    raw = {"experiment": {"data": "sample"},
           "condition": [{"name": "bal", "augment": {"a": [2, 4], "delta": [0.01, 0.03]}}]}
    c = parse_config(raw)
    assert [x.name for x in c.conditions] == ["baseline", "bal a=2 δ=0.01", "bal a=2 δ=0.03",
                                              "bal a=4 δ=0.01", "bal a=4 δ=0.03"]
    assert c.conditions[4].augment == {"a": 4, "delta": 0.03, "strategy": "balanced"}


@pytest.mark.parametrize("raw, message", [
    ({"experiment": {}}, "needs data"),
    ({"experiment": {"data": "x", "colour": 1}}, r"unknown \[experiment\] key 'colour'; allowed: name, data"),
    ({"experiment": {"data": "x", "test_fraction": 1.5}}, "test_fraction"),
    ({"experiment": {"data": "x", "backend": "gpaw"}}, "backend"),
    ({"experiment": {"data": "x"}, "condition": [{"name": "a", "augment": {"dlta": 1}}]}, "unknown augment"),
])
def test_bad_configs(raw, message):
    with pytest.raises(InputError, match=message):
        parse_config(raw, "cfg.toml")


def test_invalid_toml_names_the_line():
    with pytest.raises(InputError, match="cfg.toml, line 2"):
        parse_toml("[experiment]\ndata = = 1\n", "cfg.toml")


def _pool(n: int) -> list:
    """``n`` distinct one-atom structures (a split only compares them)."""
    from pyita.structure import Structure

    return [Structure(["H"], np.array([[0.0, 0.0, 0.1 * k]]), None, energy=-1.0) for k in range(n)]


def test_trial_split_is_paired_seeded_and_disjoint():
    c = parse_config({"experiment": {"data": "x", "subset_size": 50, "test_fraction": 0.2, "seed": 7}})
    pool = _pool(200)
    a, b = trial_split(pool, c, 3), trial_split(pool, c, 3)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train) and a.model_seed == b.model_seed
    assert len(a.test) == 10 and len(a.train) == 40
    assert not set(a.test) & set(a.train)
    other = trial_split(pool, c, 4)
    assert not np.array_equal(a.test, other.test)


def test_a_copy_of_a_training_structure_leaves_the_test_set_and_nothing_else_changes():
    c = parse_config({"experiment": {"data": "x", "subset_size": 50, "test_fraction": 0.2, "seed": 7}})
    pool = _pool(200)
    a = trial_split(pool, c, 3)
    copied = pool[:]
    copied[int(a.test[0])] = pool[int(a.train[0])].copy()   # the data holds a training structure twice
    copied[int(a.test[2])] = pool[int(a.test[1])].copy()    # and a test structure twice
    with pytest.warns(UserWarning, match="2 held-out structures are copies"):
        b = trial_split(copied, c, 3)
    assert np.array_equal(a.train, b.train) and a.model_seed == b.model_seed
    assert b.test.tolist() == [k for k in a.test.tolist() if k not in (int(a.test[0]), int(a.test[2]))]


def test_sweep_variants_get_distinct_result_files(tmp_path):
    from pyita.experiment.results import result_paths

    raw = {"experiment": {"data": "x"},
           "condition": [{"name": "abs", "augment": {"a": 2, "delta": [0.01, 0.03]},
                          "trainer": {"iterations": [15, 100]}}]}
    names = [c.name for c in parse_config(raw).conditions]
    paths = {result_paths(tmp_path, 0, n)[0] for n in names}
    assert len(paths) == len(names) == 5
    assert all(p.suffix == ".json" and p.parent == tmp_path / "results" / "trial-000" for p in paths)


def test_init_seed_offset_makes_an_aa_condition_not_a_baseline():
    raw = {"experiment": {"data": "x"},
           "condition": [{"name": "baseline"}, {"name": "again", "init_seed_offset": 1},
                         {"name": "plain"}, {"name": "bal", "augment": {"a": 2}, "init_seed_offset": 2}]}
    c = parse_config(raw)
    assert [x.is_baseline for x in c.conditions] == [True, False, True, False]
    assert [x.init_seed_offset for x in c.conditions] == [0, 1, 0, 2]
    # the record of settings names the offset only where it is set (experiments without one read as before)
    record = [x for x in c.as_dict()["conditions"]]
    assert "init_seed_offset" not in record[0] and record[1]["init_seed_offset"] == 1
    # an A/A condition alone gets the baseline added, and is compared with it
    alone = parse_config({"experiment": {"data": "x"}, "condition": [{"name": "again", "init_seed_offset": 1}]})
    assert [x.name for x in alone.conditions] == ["baseline", "again"]


def test_aa_preset_is_an_aa_check():
    text, path = read_config_text(preset="aa")
    c = parse_config(parse_toml(text, path), path)
    base, other = c.conditions
    assert base.is_baseline and not other.is_baseline
    assert (other.augment, other.trainer, other.init_seed_offset) == (None, {}, 1)
    assert c.data == "sample:tio2-md" and c.trials >= 8


@pytest.mark.parametrize("raw, message", [
    ({"experiment": {"data": "x"}, "condition": [{"name": "a", "init_seed_offset": -1}]}, "init_seed_offset"),
    ({"experiment": {"data": "x"}, "condition": [{"name": "a", "init_seed_offset": 1.5}]}, "init_seed_offset"),
    ({"experiment": {"data": "x"}, "condition": [{"name": "a", "init_seed_offset": True}]}, "init_seed_offset"),
    ({"experiment": {"data": "x"}, "trainer": {"seed": 3}}, r"\[trainer\]: seed cannot be set"),
    ({"experiment": {"data": "x"}, "condition": [{"name": "a", "trainer": {"init_seed": 3}}]},
     "condition 'a': init_seed cannot be set"),
])
def test_bad_seed_settings(raw, message):
    with pytest.raises(InputError, match=message):
        parse_config(raw, "cfg.toml")


def test_data_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """A config file's data is read from the file's own folder, --data and the presets from the current one;
    either way the config (and so experiment.json) names the data absolutely, so a resume started from
    another folder, or spelling the same path differently, still recognises the experiment."""
    (tmp_path / "cfg").mkdir()
    (tmp_path / "run").mkdir()
    config_file = tmp_path / "cfg" / "exp.toml"
    config_file.write_text('[experiment]\ndata = "../data/train.xsf"\n')
    monkeypatch.chdir(tmp_path / "run")
    from_file = parse_config(parse_toml(config_file.read_text(), config_file), config_file)
    assert from_file.data == str(tmp_path / "data" / "train.xsf")
    overridden = parse_config(parse_toml(config_file.read_text(), config_file), config_file,
                              {"data": "../data/./train.xsf"})
    assert overridden.data == str(tmp_path / "data" / "train.xsf")
    text, path = read_config_text(preset="powered")
    assert parse_config(parse_toml(text, path), path).data == str(tmp_path / "shared/data/tio2/tio2-xsf-full.tar.gz")
    assert parse_config({"experiment": {"data": "sample:tio2-md"}}).data == "sample:tio2-md"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_runs_on_aenet_less_what_aenet_cannot_train(name):
    """``--backend aenet`` on a preset: lbfgs becomes aenet's bfgs, and the conditions aenet cannot train
    (force training, on the fly, parent–child, weights) are left out with their reason; the rest stay."""
    from pyita.backends.aenet.settings import AenetSettings

    text, path = read_config_text(preset=name)
    embedded = parse_config(parse_toml(text, path), path)
    on_aenet = parse_config(parse_toml(text, path), path, {"backend": "aenet"})
    assert [c.name for c in on_aenet.conditions] == [c.name for c in embedded.conditions
                                                    if c.name not in on_aenet.left_out]
    for c in embedded.conditions:
        trainer = {**embedded.trainer, **c.trainer}
        cannot = bool(trainer.get("force_weight") or (c.augment or {}).get("on_the_fly")
                      or (c.augment or {}).get("parent_child_weight") or (c.augment or {}).get("weight") == 0)
        assert (c.name in on_aenet.left_out) == cannot, c.name
    for c in on_aenet.conditions:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert AenetSettings.from_dict({**on_aenet.trainer, **c.trainer}).method == "bfgs"
        assert [str(w.message) for w in caught] == (
            ["aenet backend ignores trainer settings it has no equivalent for: ['early_stopping']"]
            if "early_stopping" in on_aenet.trainer else [])
    assert on_aenet.as_dict().get("left_out") == (on_aenet.left_out or None)


@pytest.mark.parametrize("raw, message", [
    ({"experiment": {"data": "x", "backend": "aenet"}, "trainer": {"force_weight": 0.1}},
     "cannot train the baseline.*force_weight"),
    ({"experiment": {"data": "x", "backend": "aenet"},
      "condition": [{"name": "f", "trainer": {"force_weight": 0.1}}]}, "none of the conditions.*f: "),
])
def test_aenet_backend_refuses_an_experiment_it_cannot_run(raw, message):
    with pytest.raises(InputError, match=message):
        parse_config(raw, "cfg.toml")


def test_a_condition_may_choose_its_backend():
    """versus-aenet: each aenet condition is compared with the embedded baseline of its length; the record
    names the backend only where a condition sets one."""
    from pyita.experiment.analysis import baseline_for

    text, path = read_config_text(preset="versus-aenet")
    c = parse_config(parse_toml(text, path), path)
    assert [(x.name, x.backend, x.is_baseline) for x in c.conditions] == (
        [(f"baseline it={n}", None, True) for n in (15, 450, 2000)]
        + [(f"aenet it={n}", "aenet", False) for n in (15, 450, 2000)])
    assert [baseline_for(c, x) for x in c.conditions[3:]] == [f"baseline it={n}" for n in (15, 450, 2000)]
    recorded = c.as_dict()["conditions"]
    assert "backend" not in recorded[0] and recorded[3]["backend"] == "aenet"
    assert (c.subset_size, c.trials, c.max_energy) == (500, 5, 1.0)


@pytest.mark.parametrize("condition, message", [
    ({"name": "x", "backend": "lammps"}, "backend must be one of"),
    ({"name": "x", "backend": "aenet", "trainer": {"force_weight": 0.1}}, "asks for backend aenet, but.*force"),
])
def test_bad_condition_backend(condition, message):
    with pytest.raises(InputError, match=message):
        parse_config({"experiment": {"data": "x"}, "condition": [condition]}, "cfg.toml")


def test_an_aenet_condition_without_aenet_fails_before_anything_is_written(tmp_path):
    """One clear error, exit 2, no output folder: checked before the experiment claims its folder."""
    from faults import error_line, run_cli

    config = tmp_path / "exp.toml"
    config.write_text('[experiment]\ndata = "sample:tio2-md"\ntrials = 2\n\n[[condition]]\nname = "aenet"\n'
                      'backend = "aenet"\n')
    done = run_cli("experiment", config, "--aenet-bin", tmp_path / "nowhere", "--out", tmp_path / "out",
                   cwd=tmp_path, PATH="/usr/bin:/bin")
    error_line(done, "'aenet' need aenet")
    assert not (tmp_path / "out").exists()


def test_the_augment_table_knows_exactly_the_augmentation_and_its_training_keys():
    """A condition's augment table is AugmentSettings' fields (not its seed, which is the trial's, nor cap,
    which the training record does not hold) plus the training keys the embedded backend translates: a new
    augmentation setting appears in the config schema, or this fails."""
    from dataclasses import fields

    from pyita.augment import AugmentSettings
    from pyita.backends.embedded import AUGMENT_TRAINING_KEYS
    from pyita.experiment.schema import AugmentTable

    settings = {f.name for f in fields(AugmentSettings)} - {"seed", "cap"}
    assert set(AugmentTable.model_fields) == settings | set(AUGMENT_TRAINING_KEYS)


def test_a_generate_in_s_types_are_the_pool_s_references_and_set_its_maxenergy_cut(tmp_path):
    """As `pyita train` and aenet do: TYPES of the input generate.in, not a fit, decide the cohesive energies
    (and so which structures MAXENERGY keeps) unless the config gives its own."""
    from pyita.experiment.protocol import load_pool
    from pyita.io import read_structures
    from pyita.io.xsf_write import write_xsf

    structures = read_structures("sample:tio2-md")[:8]
    types = {"Ti": -1600.5, "O": -430.25}
    names = []
    for k, s in enumerate(structures):
        write_xsf(tmp_path / f"s{k}.xsf", s)
        names.append(f"s{k}.xsf")
    (tmp_path / "generate.in").write_text("OUTPUT x.train\n\nTYPES\n2\nTi -1600.5\nO -430.25\n\nFILES\n8\n"
                                          + "\n".join(names) + "\n")
    cohesive = [(s.energy - sum(types[e] for e in s.symbols)) / len(s.symbols) for s in structures]
    cut = float(np.median(cohesive))
    config = parse_config({"experiment": {"data": str(tmp_path / "generate.in"), "max_energy": cut}},
                          tmp_path / "x.toml")
    pool, reference = load_pool(config)
    assert reference == types
    kept = [s.energy for s, c in zip(structures, cohesive) if c <= cut]
    assert 0 < len(kept) < 8 and [s.energy for s in pool] == pytest.approx(kept, abs=1e-9)
    # the same files without a generate.in: nothing names the references, so they are fitted
    _, fitted = load_pool(parse_config({"experiment": {"data": str(tmp_path)}}, tmp_path / "y.toml"))
    assert fitted != types
