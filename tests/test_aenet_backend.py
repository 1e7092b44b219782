"""The aenet backend: input writers against aenet 2.0.4's rules, run folders, parsers, executable discovery.

aenet itself is not installable here. The writers are checked line by line against golden files written by
hand from the rules in docs/aenet-formats.md, and against rule checks; the parsers read output files
constructed from aenet's documented layout (tests/data/aenet, see make_test_data.py); the run step is tested
with STAND-IN executables (tests/data/fake_aenet) for the error-detection path only. Everything that needs
real aenet results skips unless aenet is installed.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pyita import __version__
from pyita import reference
from pyita.backends import aenet
from pyita.backends.aenet import run as aenet_run
from pyita.backends.aenet.folder import read_record
from pyita.backends.aenet import settings as aenet_settings
from pyita.io import aenet_outputs
from pyita.errors import InputError, PyitaError
from pyita.architecture import ChebyshevSetup, parse_hidden
from pyita.io.aenet_inputs import (METHOD_PARAMS, BehlerSetup, PredictIn, TrainIn, check_readval_keys,
                                   format_method_line, format_predict_in, format_stp, format_train_in)
from pyita.io.generate_in import read_generate_in
from pyita.io.xsf import read_xsf
from pyita.structure import Structure

DATA = Path(__file__).resolve().parent / "data" / "aenet"
GOLDEN = DATA / "golden"
FAKE = Path(__file__).resolve().parent / "data" / "fake_aenet"
E_TI, E_O = -1626.66972707, -433.23448532
SINGLE_TOKEN_KEYWORDS = {"OUTPUT", "TRAININGSET"}


def golden(name: str) -> str:
    return (GOLDEN / name).read_text().replace("{version}", __version__)


def assert_same_lines(written: str, expected: str) -> None:
    got, want = written.splitlines(), expected.splitlines()
    for k, (a, b) in enumerate(zip(got, want), 1):
        assert a == b, f"line {k}: {a!r} != {b!r}"
    assert len(got) == len(want), f"{len(got)} lines written, {len(want)} expected"
    assert written.endswith("\n")


@pytest.fixture()
def run_folder(tmp_path) -> Path:
    """A run folder for the synthetic data with s05, s06 held out and the TiO2 example's TYPES."""
    out = tmp_path / "run"
    aenet.run_aenet_prepare(DATA / "xsf", out, test_parents=DATA / "test-parents.txt",
                            types={"Ti": E_TI, "O": E_O}, progress=False)
    return out


# ------------------------------------------------------------------------------------------- rule checks

def unquoted_slash(value: str) -> bool:
    return "/" in value and not (len(value) > 1 and value[0] == value[-1] and value[0] in "'\"")


def content_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and line.strip()[0] not in "!#%"]


def check_input_rules(folder: Path, species: list[str]) -> None:
    """The rules of docs/aenet-formats.md that every PyITA-written run folder must obey."""
    gen = (folder / "generate.in").read_text()
    lines = gen.splitlines()
    # FILES upper case, count on the very next line, that many entries after it.
    assert [line for line in lines if line.strip().upper() == "FILES"] == ["FILES"]
    k = lines.index("FILES")
    count = int(lines[k + 1])
    entries = [line for line in lines[k + 2:] if line.strip()]
    assert len(entries) == count and all((folder / e).is_file() for e in entries)
    # Single-token values: no unquoted '/'.
    for text in (gen, (folder / "train.in").read_text()):
        for line in content_lines(text):
            fields = line.split()
            if fields[0].upper() in SINGLE_TOKEN_KEYWORDS:
                assert not unquoted_slash(fields[1]), line
    body = content_lines(gen)
    setups = body[body.index("SETUPS") + 1: body.index("SETUPS") + 1 + len(species)]
    assert [s.split()[0] for s in setups] == species
    assert not any(unquoted_slash(s.split()[1]) for s in setups)
    # TYPES: count then one "Sym E" line per species, and read back by PyITA's own reader.
    assert read_generate_in(folder / "generate.in").types.keys() == set(species)
    # NETWORKS in train.in: Sym file N n:act … with N layers; the file names single tokens.
    train = content_lines((folder / "train.in").read_text())
    nets = train[train.index("NETWORKS") + 1:]
    assert len(nets) == len(species)
    for line in nets:
        sym, nn, n_layers, *layers = line.split()
        assert sym in species and not unquoted_slash(nn)
        assert int(n_layers) == len(layers) and all(re.fullmatch(r"\d+:(linear|tanh|sigmoid|mtanh|twist)", x)
                                                    for x in layers)
    # METHOD: the very next line holds the method and its parameters.
    raw = (folder / "train.in").read_text().splitlines()
    assert raw[raw.index("METHOD") + 1].split()[0] in METHOD_PARAMS
    # Chebyshev parameters all on the one line after BASIS; feature count as aenet computes it.
    for sym in species:
        stp = (folder / f"{sym}.stp").read_text().splitlines()
        if "BASIS type=Chebyshev" in stp:
            line = stp[stp.index("BASIS type=Chebyshev") + 1]
            check_readval_keys(line, ("radial_Rc", "radial_N", "angular_Rc", "angular_N"))
            values = dict(re.findall(r"(\w+)\s*=\s*(\S+)", line))
            n = int(values["radial_N"]) + int(values["angular_N"]) + 2
            n *= 2 if len(species) > 1 else 1
            record = read_record(folder)
            assert record["feature_count"][sym] == n
        env = stp[stp.index(f"ENV {len(species)}") + 1: stp.index(f"ENV {len(species)}") + 1 + len(species)]
        assert env == species
    # predict.in: TYPES, NETWORKS, FORCES, FILES with count next.
    pred = (folder / "predict.in").read_text().splitlines()
    k = pred.index("FILES")
    assert int(pred[k + 1]) == len([x for x in pred[k + 2:] if x.strip()])


def test_run_folder_matches_golden_files(run_folder):
    for name in ("generate.in", "Ti.stp", "O.stp", "train.in", "predict.in"):
        assert_same_lines((run_folder / name).read_text(), golden(name))
    check_input_rules(run_folder, ["Ti", "O"])
    # The XSF files are byte-identical copies; run.sh is executable and checks outputs for 'Error'.
    assert (run_folder / "xsf/train/s01.xsf").read_bytes() == (DATA / "xsf/s01.xsf").read_bytes()
    assert (run_folder / "xsf/test/s05.xsf").read_bytes() == (DATA / "xsf/s05.xsf").read_bytes()
    run_sh = (run_folder / "run.sh").read_text()
    assert os.access(run_folder / "run.sh", os.X_OK)
    assert "AENET_GENERATE" in run_sh and 'grep -q -E "Error|ERROR' in run_sh
    assert run_sh.index("generate.in") < run_sh.index("train.in") < run_sh.index("predict.in")
    record = read_record(run_folder)
    assert record["reference_energies_origin"] == {"Ti": "user", "O": "user"}
    assert record["counts"]["train_files"] == 4 and record["counts"]["test_files"] == 2


def test_behler_and_train_writers_match_golden():
    setup = BehlerSetup(rc=6.5, radial_eta=(0.5,), angular=((0.01, 1.0, 1.0),), rmin=0.75)
    text = format_stp("Ti", ["Ti", "O"], setup, ["small Behler2011 set for a test"])
    assert_same_lines(text, golden("behler-Ti.stp"))
    lines = text.splitlines()
    k = lines.index("FUNCTIONS type=Behler2011")
    assert int(lines[k + 1]) == len(lines) - k - 2 == setup.n_features(2)
    t = TrainIn("runs/a/aenet.train", {"Cu": "nets/Cu.nn"}, parse_hidden("10:tanh,10:s,5:linear"),
                iterations=2000, method="adam", method_params={"batchsize": 16, "samplesize": 100, "mu": 0.001,
                                                               "b1": 0.9},
                max_energy=1.0, sampling="random")
    assert_same_lines(format_train_in(t), golden("train-adam.in"))


def test_default_behler_set_feature_count():
    setup = BehlerSetup()
    text = format_stp("O", ["Ti", "O"], setup)
    lines = text.splitlines()
    k = lines.index("FUNCTIONS type=Behler2011")
    functions = lines[k + 2:]
    assert int(lines[k + 1]) == len(functions) == setup.n_features(2) == 2 * 8 + 3 * 12
    for line in functions:   # every key is found by aenet's substring search at its own "key="
        keys = ["G", "type2", "Rc", "Rs", "eta"] if line.startswith("G=2") else \
            ["G", "type2", "type3", "Rc", "eta", "lambda", "zeta"]
        check_readval_keys(line, keys)


def test_chebyshev_feature_counts():
    assert ChebyshevSetup().n_features(2) == 44          # the TiO2 example
    assert ChebyshevSetup().n_features(1) == 22
    assert ChebyshevSetup(radial_n=10, angular_n=3).n_features(3) == 30


def test_readval_substring_trap_is_caught():
    # aenet finds keys with index(line, key): "eta" inside "zeta=" and "lambda" inside "lambda0=" misread.
    with pytest.raises(ValueError, match="eta"):
        check_readval_keys("G=4 type2=O type3=O Rc=6.5 lambda=1.0 zeta=1.0 eta=0.01", ["eta"])
    with pytest.raises(ValueError, match="lambda"):
        check_readval_keys("ekf lambda0=0.97 lambda=0.99", ["lambda"])
    assert format_method_line("ekf", {"lambda0": 0.97, "lambda": 0.99}) == "ekf lambda=0.99 lambda0=0.97"
    assert format_method_line("lm", {"iter": 3, "batchsize": 5000, "learnrate": 0.1}) == \
        "lm batchsize=5000 learnrate=0.1 iter=3"
    assert format_method_line("BFGS") == "bfgs"
    with pytest.raises(ValueError, match="takes no parameters"):
        format_method_line("bfgs", {"mu": 1})
    with pytest.raises(ValueError, match="unknown adam parameter"):
        format_method_line("adam", {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="unknown training method"):
        format_method_line("sgd")


def test_single_token_values_are_quoted_and_files_lines_are_not():
    text = format_train_in(TrainIn("../x/aenet.train", {"Ti": "../nets/Ti.nn"}, [(5, "tanh")]))
    assert "TRAININGSET '../x/aenet.train'" in text and "'../nets/Ti.nn'" in text
    p = format_predict_in(PredictIn({"Ti": "Ti.nn"}, ["../data/a b/x.xsf"]))
    assert p.splitlines()[-1] == "../data/a b/x.xsf"
    with pytest.raises(ValueError, match="comment"):
        format_predict_in(PredictIn({"Ti": "Ti.nn"}, ["#x.xsf"]))
    with pytest.raises(ValueError, match="at least one"):
        format_predict_in(PredictIn({"Ti": "Ti.nn"}, []))
    with pytest.raises(ValueError, match="chemical symbol"):
        format_stp("Xx", ["Xx"], ChebyshevSetup())


def test_hidden_layer_parsing():
    assert parse_hidden("15:tanh,15:tanh") == [(15, "tanh"), (15, "tanh")]
    assert parse_hidden("10:t 5:s") == [(10, "tanh"), (5, "sigmoid")]
    assert parse_hidden([20, 20]) == [(20, "tanh"), (20, "tanh")]
    for bad in ("x:tanh", "15:relu", "", "0:tanh"):
        with pytest.raises(ValueError):
            parse_hidden(bad)


# ---------------------------------------------------------------------------------- reference energies

def _synthetic(compositions, energies, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for counts in compositions:
        symbols = [s for s, n in counts.items() for _ in range(n)]
        e = sum(energies[s] * n for s, n in counts.items()) + rng.normal(0, noise)
        out.append(Structure(symbols, rng.normal(0, 3, (len(symbols), 3)), energy=e,
                             forces=np.zeros((len(symbols), 3))))
    return out


def test_least_squares_reference_energies_recover_known_values():
    truth = {"Ti": -1626.66972707, "O": -433.23448532, "Li": -190.5}
    comps = [{"Ti": 2, "O": 4}, {"Ti": 8, "O": 15}, {"Ti": 1, "O": 1, "Li": 2}, {"Li": 3, "O": 1},
             {"Ti": 4, "O": 7, "Li": 1}, {"Ti": 3, "O": 6}]
    fitted, info = reference.fit_references(_synthetic(comps, truth), ["Ti", "O", "Li"])
    for s in truth:
        assert fitted[s] == pytest.approx(truth[s], abs=1e-6)
    assert not info["rank_deficient"] and info["residual_rms_eV_per_atom"] < 1e-9
    # Species held fixed: only the rest is fitted.
    fitted, _ = reference.fit_references(_synthetic(comps, truth, noise=1e-3), ["Ti", "O", "Li"],
                                             fixed={"Ti": truth["Ti"]})
    assert set(fitted) == {"O", "Li"}
    assert fitted["O"] == pytest.approx(truth["O"], abs=2e-3) and fitted["Li"] == pytest.approx(truth["Li"], abs=2e-3)


def test_rank_deficient_fit_is_flagged_and_keeps_cohesive_energies():
    truth = {"Ti": -1626.0, "O": -433.0}
    data = _synthetic([{"Ti": 2, "O": 4}, {"Ti": 8, "O": 16}, {"Ti": 4, "O": 8}], truth)
    fitted, info = reference.fit_references(data, ["Ti", "O"])
    assert info["rank_deficient"]
    for s in data:   # the fit still reproduces every energy of these compositions
        assert sum(fitted[x] for x in s.symbols) == pytest.approx(s.energy, abs=1e-6)


def test_prepare_fits_missing_reference_energies_and_says_so(tmp_path):
    with pytest.warns(UserWarning, match="fitted by least squares"):
        record = aenet.run_aenet_prepare(DATA / "xsf", tmp_path / "run", test_parents=DATA / "test-parents.txt",
                                         types={"Ti": E_TI}, progress=False)
    assert record["reference_energies_origin"] == {"Ti": "user", "O": "fitted"}
    assert "note" in record["reference_energy_fit"]
    assert "fitted by least squares" in (tmp_path / "run" / "generate.in").read_text()
    # Only the 4 training originals were used for the fit (no test information).
    assert record["reference_energy_fit"]["n_structures"] == 4


def test_parse_types():
    assert reference.parse_types("Ti=-1626.67,O=-433.23") == {"Ti": -1626.67, "O": -433.23}
    assert reference.parse_types("Ti=-1.5d2") == {"Ti": -150.0}
    with pytest.raises(InputError, match="Sym=energy"):
        reference.parse_types("Ti:-1")


# ------------------------------------------------------------------------------- split by parent

@pytest.fixture()
def augmented(tmp_path) -> Path:
    from pyita.augment import AugmentSettings
    from pyita.augment.run import run_augment

    run_augment(DATA / "xsf", tmp_path / "aug", AugmentSettings(a=2, delta=0.02), progress=False)
    return tmp_path / "aug" / "generate.in"


def _parent_of(xsf_path: Path) -> str | None:
    s = read_xsf(xsf_path)
    return Path(s.info["parent_source"]).name if s.info.get("derived") else None


def test_test_parents_and_their_derived_structures_stay_out_of_training(augmented, tmp_path):
    out = tmp_path / "run"
    record = aenet.run_aenet_prepare(augmented, out, test_parents=DATA / "test-parents.txt",
                                     types={"Ti": E_TI, "O": E_O}, progress=False)
    gen = read_generate_in(out / "generate.in")
    train_names = [Path(f).name for f in gen.files]
    parents_of_train = {_parent_of(p) for p in gen.resolved_files()} - {None}
    assert not {"s05.xsf", "s06.xsf"} & set(train_names)
    assert not {"s05.xsf", "s06.xsf"} & parents_of_train
    assert parents_of_train == {"s01.xsf", "s02.xsf", "s03.xsf", "s04.xsf"}
    assert len(gen.files) == 4 + 4 * 2
    pred = (out / "predict.in").read_text().splitlines()
    assert pred[pred.index("FILES") + 1:] == ["2", "xsf/test/s05.xsf", "xsf/test/s06.xsf"]
    assert record["counts"]["derived_of_test_parents_dropped"] == 4
    train_in = (out / "train.in").read_text()
    assert "TESTPERCENT 0\n" in train_in and "derived (Taylor) structures of a test parent" in train_in
    listed = [x for x in (out / "test-parents.txt").read_text().splitlines() if not x.startswith("#")]
    assert [Path(x).name for x in listed] == ["s05.xsf", "s06.xsf"]
    check_input_rules(out, ["Ti", "O"])


def test_random_test_fraction_splits_by_parent(augmented, tmp_path):
    record = aenet.run_aenet_prepare(augmented, tmp_path / "run", test_fraction=0.34, seed=3,
                                     types={"Ti": E_TI, "O": E_O}, progress=False)
    rows = (tmp_path / "run" / "structures.csv").read_text().splitlines()[1:]
    test = {Path(r.split(",")[3]).name for r in rows if ",test," in r}
    train_parents = {Path(r.split(",")[4]).name for r in rows if ",train,derived," in r}
    train_originals = {Path(r.split(",")[3]).name for r in rows if ",train,original," in r}
    assert len(test) == 2 and not test & train_parents and not test & train_originals
    assert record["counts"]["test_parents"] == 2


def test_max_energy_filter_applies_to_train_and_test(tmp_path):
    per_atom = {}
    for p in sorted((DATA / "xsf").glob("*.xsf")):
        s = read_xsf(p)
        per_atom[p.name] = (s.energy - sum(E_TI if x == "Ti" else E_O for x in s.symbols)) / len(s)
    threshold = -3.0855          # between s05 (-3.0911) and s06 (-3.0809), the two test parents
    assert per_atom["s06.xsf"] > threshold > per_atom["s05.xsf"] > max(per_atom[f"s0{k}.xsf"] for k in range(1, 5))
    record = aenet.run_aenet_prepare(DATA / "xsf", tmp_path / "run", test_parents=DATA / "test-parents.txt",
                                     types={"Ti": E_TI, "O": E_O}, progress=False,
                                     settings={"max_energy": threshold})
    c = record["counts"]
    assert (c["above_max_energy_train"], c["above_max_energy_test"], c["test_files"]) == (0, 1, 1)
    assert f"MAXENERGY   {threshold!r}" in (tmp_path / "run" / "train.in").read_text()
    assert (tmp_path / "run" / "predict.in").read_text().endswith("FILES\n1\nxsf/test/s05.xsf\n")
    # aenet's own filter: above the threshold in eV/atom over the reference energies → training drops too.
    record = aenet.run_aenet_prepare(DATA / "xsf", tmp_path / "run2", test_fraction=0, types={"Ti": E_TI, "O": E_O},
                                     progress=False, settings={"max_energy": -3.099})
    assert record["counts"]["above_max_energy_train"] == sum(v > -3.099 for v in per_atom.values())
    assert "NOT test errors" in record["test_set"]


def test_extxyz_input_gets_placeholder_forces(tmp_path):
    from pyita.augment import AugmentSettings
    from pyita.augment.run import run_augment

    run_augment(DATA / "xsf", tmp_path / "aug", AugmentSettings(a=1, delta=0.02), fmt="extxyz",
                progress=False)
    out = tmp_path / "run"
    aenet.run_aenet_prepare(tmp_path / "aug" / "augmented.extxyz", out, test_fraction=0.2,
                            types={"Ti": E_TI, "O": E_O}, progress=False)
    for f in read_generate_in(out / "generate.in").resolved_files():
        s = read_xsf(f, require_labels=True)       # generate.x needs energy and force columns everywhere
        if s.info.get("derived"):
            assert "placeholder_forces" in s.info
    # Test parents named by their original file names are found through the frames' recorded sources.
    record = aenet.run_aenet_prepare(tmp_path / "aug" / "augmented.extxyz", tmp_path / "run2",
                                     test_parents=DATA / "test-parents.txt", types={"Ti": E_TI, "O": E_O},
                                     progress=False)
    assert record["counts"]["test_parents"] == 2 and record["counts"]["derived_of_test_parents_dropped"] == 2
    assert record["counts"]["train_files"] == 4 + 4


def test_prepare_refuses_bad_input(tmp_path):
    with pytest.raises(PyitaError, match="test-fraction"):
        aenet.run_aenet_prepare(DATA / "xsf", tmp_path / "a", test_fraction=1.5, progress=False)
    bad = tmp_path / "tp.txt"
    bad.write_text("nothing.xsf\n")
    with pytest.raises(InputError, match="matches a structure"), pytest.warns(UserWarning):
        aenet.run_aenet_prepare(DATA / "xsf", tmp_path / "b", test_parents=bad, progress=False)
    with pytest.raises(PyitaError, match="fits energies only"):
        aenet.AenetSettings.from_dict({"force_weight": 0.1})
    with pytest.raises(PyitaError, match="method"):
        aenet.AenetSettings(method="sgd")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_settings_from_experiment_table():
    with pytest.warns(UserWarning, match="batch_size"):
        s = aenet.AenetSettings.from_dict({"hidden": [10, 10], "activation": "sigmoid", "epochs": 50,
                                           "batch_size": 32, "force_weight": 0.0})
    assert s.hidden == [(10, "sigmoid"), (10, "sigmoid")] and s.iterations == 50


# ------------------------------------------------------------------------------------------------ parsers

def test_fortran_numbers():
    f = aenet_outputs.fortran_float
    assert f("1.234567E-02") == pytest.approx(0.01234567)
    assert f("1.5D+01") == 15.0 and f("-2.5d0") == -2.5
    assert f("1.000000-100") == pytest.approx(1e-100)
    assert math.isnan(f("NaN")) and math.isnan(f("************")) and f("-Infinity") == -math.inf


def test_read_train_output():
    out = aenet_outputs.read_train_output(DATA / "train.out")
    assert [e["epoch"] for e in out["epochs"]] == [0, 1, 2, 3]
    assert out["epochs"][0]["MAE_train"] == pytest.approx(0.4123)
    assert out["epochs"][-1]["RMSE_train"] == pytest.approx(0.0167)
    assert out["epochs"][-1]["MAE_test"] == 0.0 and math.isnan(out["epochs"][-1]["RMSE_test"])
    assert out["final"]["MAE_train_meV_atom"] == pytest.approx(12.3)
    assert math.isnan(out["final"]["RMSE_test_meV_atom"])
    assert out["n_train"] == 14 and out["n_test"] == 0 and out["errors"] == []


def test_read_energies_files(tmp_path):
    rows = aenet_outputs.read_energies_file(DATA / "energies.train.0")
    assert len(rows) == 4
    assert rows[0]["counts"] == {"Ti": 2, "O": 4} and rows[3]["counts"] == {"Ti": 2, "O": 3}
    assert rows[3]["n_atoms"] == 5 and rows[3]["file"] == "xsf/train/s04.xsf"
    assert rows[1]["diff_per_atom"] == pytest.approx(-0.02)
    assert rows[1]["E_ref"] - rows[1]["E_ann"] == pytest.approx(-0.02 * 6, abs=1e-4)
    assert aenet_outputs.read_energies_file(DATA / "energies.test.0") == []
    three = aenet_outputs.read_energies_file(DATA / "energies-3species.train.0")
    assert three[0]["counts"] == {"Li": 1, "Ti": 2, "O": 4}
    assert three[1]["file"] == "../other folder/with space.xsf" and three[1]["n_atoms"] == 9
    # Without the header the species columns are still found (named by position).
    body = (DATA / "energies-3species.train.0").read_text().splitlines()[1:]
    headless = tmp_path / "energies.train.0"
    headless.write_text("\n".join(body) + "\n")
    rows = aenet_outputs.read_energies_file(headless)
    assert rows[0]["counts"] == {"type1": 1, "type2": 2, "type3": 4}


def test_read_predict_output():
    results = aenet_outputs.read_predict_output(DATA / "predict.out")
    assert [r["structure_number"] for r in results] == [1, 2]
    assert [r["file"] for r in results] == ["xsf/test/s05.xsf", "xsf/test/s06.xsf"]
    ref = read_xsf(DATA / "xsf" / "s05.xsf")
    r = results[0]
    assert r["n_atoms"] == 6 and r["symbols"] == ref.symbols
    assert r["forces"].shape == (6, 3)
    assert np.allclose(r["forces"], ref.forces + [0.1, -0.2, 0.0], atol=1e-6)
    assert r["total_energy"] == pytest.approx(ref.energy + 0.012 * 6, abs=1e-7)
    assert r["lattice"][0, 0] == pytest.approx(4.5937)
    assert not r["relaxed"]


def test_error_tables_and_collect_results(run_folder):
    for name in ("train.out", "energies.train.0", "energies.test.0", "predict.out"):
        shutil.copyfile(DATA / name, run_folder / ("predict.out" if name == "predict.out" else name))
    results = aenet.collect_results(run_folder)
    energy = results["energy_errors"]
    assert [Path(r["source"]).name for r in energy] == ["s05.xsf", "s06.xsf"]
    assert all(r["error_meV_per_atom"] == pytest.approx(12.0, abs=1e-4) for r in energy)
    forces = results["force_errors"]
    assert len(forces) == 2 * 6
    assert np.allclose([r["fx_error"] for r in forces], 0.1, atol=1e-6)
    assert np.allclose([r["fy_error"] for r in forces], -0.2, atol=1e-6)
    assert np.allclose([r["fz_error"] for r in forces], 0.0, atol=1e-6)
    assert results["history"][-1]["train_energy_mae"] == pytest.approx(12.3)
    assert "test_energy_mae" not in results["history"][-1]      # TESTPERCENT 0: aenet has no test set
    assert results["summary"]["energy_meV_per_atom"]["mae"] == pytest.approx(12.0, abs=1e-4)
    assert results["summary"]["force_components_eV_per_A"]["n"] == 2 * 6 * 3
    for name in ("errors-energy.csv", "errors-force.csv", "results.json"):
        assert (run_folder / name).is_file()
    # The tables `pyita predict` writes (issue 23: the header was file,source,n_atoms,E_ref,E_pred,error_meV_atom)
    header = (run_folder / "errors-energy.csv").read_text().splitlines()[0]
    assert header == ("structure,source,n_atoms,derived,energy_pred_eV,energy_pred_eV_per_atom,energy_ref_eV,"
                      "energy_ref_eV_per_atom,error_meV_per_atom")
    assert (run_folder / "errors-force.csv").read_text().splitlines()[0].startswith("structure,atom,symbol,x,y,z,")


def test_error_tables_refuse_mismatched_structures():
    pred = aenet_outputs.read_predict_output(DATA / "predict.out")
    with pytest.raises(PyitaError, match="atoms"):
        aenet.error_rows(pred, [read_xsf(DATA / "xsf" / "s04.xsf"), read_xsf(DATA / "xsf" / "s06.xsf")])
    with pytest.raises(PyitaError, match="reference"):
        aenet.error_rows(pred, {})


def test_scan_output_finds_errors_and_warnings():
    text = (" Structural fingerprint\n >>> F T\n Error: incomplete output data in : x.xsf\n\n"
            " Warning: RMIN not set in : Ti.stp\n At line 12 of file generate.f90\n"
            " Fortran runtime error: End of file\n")
    errors, warns = aenet_outputs.scan_output(text)
    assert errors[0] == "Error: incomplete output data in : x.xsf"
    assert errors[1].startswith("At line 12") and "End of file" in errors[1]
    assert warns == ["Warning: RMIN not set in : Ti.stp"]
    assert aenet_outputs.scan_output((DATA / "train.out").read_text()) == ([], [])
    assert aenet_outputs.scan_output((DATA / "predict.out").read_text()) == ([], [])


# ------------------------------------------------------------------------------------ executables

def _exe(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_executables_with_version_suffixes(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    _exe(a, "generate.x-2.0.4-gfortran_mpi")
    serial = _exe(a, "generate.x-2.0.4-gfortran_serial")
    _exe(a, "train.x-2.0.3-ifort_serial")
    newest = _exe(a, "train.x-2.0.4-ifort_serial")
    exact = _exe(a, "predict.x")
    _exe(a, "predict.x-2.0.4-gfortran_serial")
    (a / "generate.x.o").write_text("")           # not executable, not a program
    found = aenet.find_executables(a, environ={"PATH": ""})
    assert found == {"generate": serial, "train": newest, "predict": exact}
    # The same folder through AENET_BIN, and through PATH; a per-program variable wins over both.
    assert aenet.find_executables(environ={"AENET_BIN": str(a), "PATH": ""})["train"] == newest
    b = tmp_path / "b"
    b.mkdir()
    own = _exe(b, "my-train")
    env = {"PATH": f"{b}{os.pathsep}{a}", "AENET_TRAIN": str(own)}
    found = aenet.find_executables(environ=env)
    assert found["train"] == own and found["generate"] == serial
    assert aenet.find_executables(environ={"PATH": str(b) + os.pathsep + str(a), "AENET_TRAIN": "my-train"}
                                  )["train"] == own


def test_find_executables_errors(tmp_path):
    with pytest.raises(PyitaError, match="aenet not found.*generate.x, train.x, predict.x"):
        aenet.find_executables(environ={"PATH": str(tmp_path)})
    with pytest.raises(PyitaError, match="not a folder"):
        aenet.find_executables(tmp_path / "missing", environ={"PATH": ""})
    _exe(tmp_path, "generate.x")
    with pytest.raises(PyitaError, match="no train.x, predict.x"):
        aenet.find_executables(tmp_path, environ={"PATH": ""})
    with pytest.raises(PyitaError, match="AENET_PREDICT"):
        aenet.find_executables(environ={"PATH": "", "AENET_PREDICT": "/nonexistent/predict.x"})


# --------------------------------------------------------------- run step: STAND-IN executables only

@pytest.fixture()
def standin(tmp_path) -> Path:
    """The STAND-IN programs of tests/data/fake_aenet (not aenet), executable in a temporary copy."""
    folder = tmp_path / "standin-bin"
    shutil.copytree(FAKE, folder)
    for p in folder.iterdir():
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return folder


def test_run_detects_error_printed_with_exit_status_0(run_folder, standin):
    with pytest.raises(PyitaError, match=r"generate\.x failed: Error: incomplete output data in : "
                                         r"xsf/train/s01\.xsf"):
        aenet.run_aenet_run(run_folder, aenet_bin=standin, progress=False)
    state = aenet_run._read_state(run_folder)
    assert state["status"] == "failed" and state["steps"][0]["returncode"] == 0
    assert (run_folder / "generate.out").is_file() and (run_folder / "aenet.train").is_file()
    assert "aenet.train" in state["outputs"]
    # A re-run removes the partial output of the failed run (ours), so it fails the same way again
    # instead of on "file already exists".
    with pytest.raises(PyitaError, match="incomplete output data"):
        aenet.run_aenet_run(run_folder, aenet_bin=standin, progress=False)
    assert "aenet.train" in aenet_run._read_state(run_folder)["removed_before_run"]


def test_run_refuses_output_it_did_not_write(run_folder, standin):
    (run_folder / "aenet.train").write_text("from an earlier run.sh\n")
    with pytest.raises(PyitaError, match="did not write.*aenet.train"):
        aenet.run_aenet_run(run_folder, aenet_bin=standin, progress=False)
    assert (run_folder / "aenet.train").read_text() == "from an earlier run.sh\n"
    (run_folder / "aenet.train").unlink()
    (run_folder / "STOP").write_text("")
    with pytest.raises(PyitaError, match="STOP"):
        aenet.run_aenet_run(run_folder, aenet_bin=standin, progress=False)


def test_rerun_after_a_finished_run_needs_overwrite(run_folder, standin):
    import json

    outputs = ["train.out", "predict.out", "energies.train.0", "energies.test.0"]
    for name in outputs:
        shutil.copyfile(DATA / name, run_folder / name)
    (run_folder / aenet_settings.RUN_STATE).write_text(json.dumps({"status": "done", "outputs": outputs}))
    with pytest.raises(PyitaError, match="--overwrite"):
        aenet.run_aenet_run(run_folder, aenet_bin=standin, progress=False)
    assert all((run_folder / n).exists() for n in outputs)
    with pytest.raises(PyitaError, match="incomplete output data"):
        aenet.run_aenet_run(run_folder, aenet_bin=standin, progress=False, overwrite=True)
    assert not any((run_folder / n).exists() for n in outputs)
    assert (run_folder / "generate.in").exists() and (run_folder / "xsf/test/s05.xsf").exists()


def test_cli_reports_aenet_error(run_folder, standin):
    from typer.testing import CliRunner

    from pyita.cli import app

    result = CliRunner().invoke(app, ["aenet", "run", str(run_folder), "--aenet-bin", str(standin), "-q"])
    assert result.exit_code != 0
    assert isinstance(result.exception, PyitaError) and "incomplete output data" in str(result.exception)


def test_cli_prepare(tmp_path):
    from typer.testing import CliRunner

    from pyita.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["aenet", "prepare", str(DATA / "xsf"), "--out", str(out), "-q",
                                      "--test-parents", str(DATA / "test-parents.txt"),
                                      "--types", f"Ti={E_TI},O={E_O}", "--method", "lm",
                                      "--method-param", "batchsize=100", "--method-param", "learnrate=0.05",
                                      "--hidden", "8:tanh,8:tanh", "--iterations", "20"])
    assert result.exit_code == 0, result.output
    train_in = (out / "train.in").read_text()
    assert "lm batchsize=100 learnrate=0.05\n" in train_in and "Ti  Ti.8t-8t.nn  2  8:tanh 8:tanh" in train_in
    check_input_rules(out, ["Ti", "O"])


def test_train_and_evaluate_fails_early_without_aenet(tmp_path, monkeypatch):
    for var in ("AENET_BIN", *aenet.ENV_VARS.values()):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    train = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-4].xsf"))]
    with pytest.raises(PyitaError, match="aenet not found"):
        aenet.train_and_evaluate_aenet(train, train[:1], {}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_and_evaluate_writes_derived_with_parent_placeholders(tmp_path, standin):
    from pyita.augment import augment

    parents = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-4].xsf"))]
    derived = augment(parents, a=2, delta=0.02, seed=1)
    test = [read_xsf(DATA / "xsf" / "s05.xsf")]
    with pytest.raises(PyitaError, match="incomplete output data"), \
            pytest.warns(UserWarning, match="fitted by least squares"):   # the STAND-IN fails, as designed
        aenet.train_and_evaluate_aenet(parents + derived, test, {"iterations": 5}, tmp_path / "run",
                                       aenet_bin=standin)
    run = tmp_path / "run"
    files = read_generate_in(run / "generate.in").resolved_files()
    assert len(files) == 4 + 8
    written = [read_xsf(f, require_labels=True) for f in files]
    for s in written:
        if s.info.get("derived"):
            parent = next(p for p in parents if p.source == s.info["parent_source"])
            assert np.allclose(s.info["placeholder_forces"], parent.forces)
    assert read_record(run)["reference_energies_origin"] == {"Ti": "fitted", "O": "fitted"}


def test_experiment_backend_refuses_what_aenet_cannot_do():
    parents = [read_xsf(DATA / "xsf" / "s01.xsf")]
    for augment, word in (({"on_the_fly": True}, "on_the_fly"), ({"weight": 0.5}, "weights"),
                          ({"parent_child_weight": 1.0}, "parent–child")):
        with pytest.raises(PyitaError, match=word):
            aenet.experiment_backend(parents, [], parents, {}, augment)
    with pytest.raises(PyitaError, match="force_weight"):
        aenet.experiment_backend(parents, [], parents, {"force_weight": 1.0})


def test_experiment_backend_error_path_leaves_no_cache_entry(tmp_path, standin, monkeypatch):
    monkeypatch.setenv("PYITA_AENET_CACHE", str(tmp_path / "cache"))
    parents = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-4].xsf"))]
    test = [read_xsf(DATA / "xsf" / "s05.xsf")]
    with pytest.raises(PyitaError, match="incomplete output data"):
        aenet.experiment_backend(parents, [], test, {"aenet_bin": str(standin), "iterations": 2},
                                 reference_energies={"Ti": E_TI, "O": E_O})
    assert list((tmp_path / "cache").iterdir()) == []


def test_experiment_backend_runs_under_scratch_and_a_failed_run_stays_there(tmp_path, monkeypatch):
    """The temporary run folder goes under ``scratch`` (the runner's OUT/.aenet-scratch), not the system's
    temporary folder; a failed run's folder is left there to be read, a finished one removed."""
    from pyita.backends.aenet import experiment as backend

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    runs = []

    def fake_run(structures, test, settings, run, aenet_bin=None):
        runs.append(run)
        run.mkdir()
        if len(runs) == 1:
            raise PyitaError("train.x failed")
        return {"energy_errors": [], "force_errors": [], "history": []}

    monkeypatch.setattr(backend, "train_and_evaluate_aenet", fake_run)
    monkeypatch.setattr(backend, "_initial_networks", lambda *args: tmp_path / "initial")
    parents = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-2].xsf"))]
    scratch = tmp_path / "out" / ".aenet-scratch"
    with pytest.raises(PyitaError, match="train.x failed"):
        aenet.experiment_backend(parents, [], parents[:1], {}, scratch=scratch)
    assert runs[0].parent.parent == scratch and runs[0].is_dir()
    aenet.experiment_backend(parents, [], parents[:1], {}, scratch=scratch)
    assert runs[1].parent.parent == scratch and not runs[1].parent.exists()
    assert list(scratch.iterdir()) == [runs[0].parent] and list((tmp_path / "system-tmp").iterdir()) == []


# --------------------------------------------- real aenet (../shared/tools or AENET_BIN; skipped without it)

def _aenet_or_skip():
    try:
        return aenet.find_executables()
    except PyitaError:
        pytest.skip("aenet (generate.x, train.x, predict.x) is not installed")


def test_real_aenet_end_to_end(tmp_path):
    _aenet_or_skip()
    train = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-4].xsf"))]
    test = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[5-6].xsf"))]
    result = aenet.train_and_evaluate_aenet(train, test, {"iterations": 3, "hidden": "5:tanh",
                                                          "reference_energies": {"Ti": E_TI, "O": E_O}},
                                            tmp_path / "run")
    assert len(result["energy_errors"]) == 2 and len(result["force_errors"]) == 12   # one row per atom
    assert [h["epoch"] for h in result["history"]] == [0, 1, 2, 3]


def test_real_aenet_experiment_backend_pairs_initial_weights(tmp_path, monkeypatch):
    _aenet_or_skip()
    monkeypatch.setenv("PYITA_AENET_CACHE", str(tmp_path / "cache"))
    parents = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[1-4].xsf"))]
    test = [read_xsf(p) for p in sorted((DATA / "xsf").glob("s0[5-6].xsf"))]
    out = aenet.experiment_backend(parents, [], test, {"iterations": 2, "hidden": "4:tanh"}, seed=7,
                                   reference_energies={"Ti": E_TI, "O": E_O})
    assert out.energy_pred.shape == (2,) and out.force_errors.shape == (36,)
    assert (out.force_errors < 0).any() and (out.force_errors > 0).any()   # signed, F_pred − F_ref, as embedded
    assert len(list((tmp_path / "cache").iterdir())) == 1
