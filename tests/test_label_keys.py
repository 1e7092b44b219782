"""Extended-XYZ label keys as the field writes them: ASE's energy/forces, MACE's REF_energy/REF_forces (found
without being named), any key named by --energy-key/--forces-key (train, predict, augment, check) or
energy_key/forces_key in an experiment config; derived frames with config_type; predictions under MACE-style keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from pyita.errors import InputError, PyitaError
from pyita.io import open_source, read_structures
from pyita.io.xsf_write import format_xsf
from pyita.structure import LabelKeys, Structure
from trainer_data import emt_structures


def frames_with(path: Path, structures, energy: str | None, forces: str | None, extra=None) -> Path:
    """``structures`` written to extended XYZ with their labels under the given info/arrays keys (None: left out),
    through ASE's writer (which puts ``energy``/``forces`` on the calculator line as it does for any calculator)."""
    frames = []
    for k, s in enumerate(structures):
        atoms = s.copy(energy=None, forces=None).to_ase()
        atoms.info.pop("source", None)
        if energy:
            atoms.info[energy] = s.energy
        if forces:
            atoms.arrays[forces] = s.forces
        if extra:
            extra(k, atoms)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    return path


@pytest.fixture(scope="module")
def structures():
    return emt_structures(4, seed=5)


def assert_labels(read, structures):
    assert [s.energy for s in read] == pytest.approx([s.energy for s in structures], abs=1e-9)
    for got, want in zip(read, structures):
        np.testing.assert_allclose(got.forces, want.forces, atol=1e-7)


def test_mace_keys_are_recognised_without_being_named(tmp_path, structures):
    path = frames_with(tmp_path / "mace.xyz", structures, "REF_energy", "REF_forces")
    assert_labels(read_structures(path), structures)
    assert "REF_energy" not in read_structures(path)[0].info   # a label, not metadata


def test_ase_keys_and_ase_calculator_results(tmp_path, structures):
    path = tmp_path / "ase.xyz"
    ase.io.write(path, [s.to_ase() for s in structures], format="extxyz")   # SinglePointCalculator → energy=, forces
    assert "energy=" in path.read_text() and "forces:R:3" in path.read_text()
    assert_labels(read_structures(path), structures)
    assert_labels(read_structures(path, keys=LabelKeys("energy", "forces")), structures)


def test_named_keys(tmp_path, structures):
    path = frames_with(tmp_path / "dft.xyz", structures, "dft_E", "dft_F")
    with pytest.raises(InputError, match="structure has no energy"):   # not guessed at
        read_structures(path)
    assert_labels(read_structures(path, keys=LabelKeys("dft_E", "dft_F")), structures)


def test_both_labels_differing_are_refused_naming_file_frame_and_option(tmp_path, structures):
    def second_energy(k, atoms):
        atoms.info["energy"] = structures[k].energy + (0.5 if k == 2 else 0.0)

    path = frames_with(tmp_path / "both.xyz", structures, "REF_energy", "REF_forces", second_energy)
    with pytest.raises(InputError) as caught:
        read_structures(path)
    message = str(caught.value)
    assert f"{path}[2]" in message and "'energy'" in message and "'REF_energy'" in message
    assert "--energy-key" in message
    # named, either is taken as it is
    assert read_structures(path, keys=LabelKeys("energy"))[2].energy == pytest.approx(structures[2].energy + 0.5)
    assert read_structures(path, keys=LabelKeys("REF_energy"))[2].energy == pytest.approx(structures[2].energy)

    def second_forces(k, atoms):
        atoms.arrays["forces"] = structures[k].forces * (2.0 if k == 1 else 1.0)

    path = frames_with(tmp_path / "forces.xyz", structures, "REF_energy", "REF_forces", second_forces)
    with pytest.raises(InputError, match=r"forces.xyz\[1\].*'forces' and 'REF_forces'.*--forces-key"):
        read_structures(path)
    # equal copies under both names are one label, not a conflict
    frames_with(tmp_path / "same.xyz", structures, "REF_energy", "REF_forces",
                lambda k, atoms: atoms.info.update(energy=structures[k].energy))
    assert_labels(read_structures(tmp_path / "same.xyz"), structures)


def test_a_named_key_missing_in_one_frame(tmp_path, structures):
    path = frames_with(tmp_path / "gap.xyz", structures, None, "my_F",
                       lambda k, atoms: atoms.info.update({"my_E": structures[k].energy} if k != 3 else {}))
    with pytest.raises(InputError) as caught:
        read_structures(path, keys=LabelKeys("my_E", "my_F"))
    assert f"{path}[3]" in str(caught.value) and "'my_E'" in str(caught.value) and "--energy-key" in str(caught.value)
    # labels optional (pyita predict): a named key must still be there
    with pytest.raises(InputError, match=r"gap.xyz\[3\]"):
        read_structures(path, require_labels=False, keys=LabelKeys("my_E", "my_F"))


def test_keys_for_xsf_input_and_blank_keys_are_refused(tmp_path, structures):
    (tmp_path / "xsf").mkdir()
    (tmp_path / "xsf" / "a.xsf").write_text(format_xsf(structures[0]))
    with pytest.raises(InputError, match="--energy-key REF_energy applies to ASE files"):
        open_source(tmp_path / "xsf", keys=LabelKeys("REF_energy"))
    with pytest.raises(PyitaError, match="--forces-key must be a key name"):
        LabelKeys(forces=" ")
    assert open_source("sample:tio2-md", keys=LabelKeys("energy", "forces")).keys == LabelKeys("energy", "forces")


def run_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyita.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_augment_cli_reads_named_keys_and_marks_derived_frames_with_config_type(tmp_path, structures):
    frames_with(tmp_path / "dft.xyz", structures, "dft_E", "dft_F")
    result = run_cli("augment", "dft.xyz", "--a", "2", "--delta", "0.02", "--format", "extxyz", "--energy-key",
                     "dft_E", "--forces-key", "dft_F", "--config-type", "taylor_d02", "--out", "out", "-q",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frames = ase.io.read(tmp_path / "out" / "augmented.extxyz", index=":")
    parents = [f for f in frames if not f.info["derived"]]
    derived = [f for f in frames if f.info["derived"]]
    assert len(parents) == 4 and len(derived) == 8
    assert all(f.info["config_type"] == "taylor_d02" and "parent" in f.info for f in derived)
    assert all("config_type" not in f.info for f in parents)
    assert [p.get_potential_energy() for p in parents] == pytest.approx([s.energy for s in structures], abs=1e-9)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["label_keys"] == {"energy": "dft_E",
                                                                                      "forces": "dft_F"}
    # the default config_type, and the file read back: derived frames are derived, parents keep their forces
    result = run_cli("augment", "dft.xyz", "--a", "1", "--delta", "0.02", "--format", "extxyz", "--energy-key",
                     "dft_E", "--forces-key", "dft_F", "--out", "out2", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    again = read_structures(tmp_path / "out2" / "augmented.extxyz")
    assert [s.info.get("config_type") for s in again if s.is_derived] == ["taylor"] * 4
    assert sum(not s.is_derived for s in again) == 4
    # a key the file lacks: one line naming the file, the frame and the key; nothing written
    result = run_cli("augment", "dft.xyz", "--a", "1", "--delta", "0.02", "--energy-key", "E", "--out", "out3",
                     cwd=tmp_path)
    assert result.returncode == 2 and "dft.xyz[0]" in result.stderr and "'E'" in result.stderr
    assert not (tmp_path / "out3").exists()


def test_predict_and_train_take_keys(tmp_path, structures):
    from pyita.predict import run_predict
    from pyita.train import TrainSettings
    from pyita.train.run import run_train
    from test_model import small_potential

    path = frames_with(tmp_path / "dft.xyz", emt_structures(8, seed=6), "dft_E", "dft_F")
    potential = small_potential()
    potential.save(tmp_path / "model.pt")
    keys = LabelKeys("dft_E", "dft_F")
    summary = run_predict(tmp_path / "model.pt", [str(path)], tmp_path / "pred", progress=False, keys=keys)
    assert summary["energy_meV_per_atom"]["n"] == 8 and summary["force_components_eV_per_A"]["n"] == 8 * 4 * 3
    unlabelled = run_predict(tmp_path / "model.pt", [str(path)], tmp_path / "pred2", progress=False)
    assert unlabelled["energy_meV_per_atom"]["n"] == 0   # without the keys the file has no labels PyITA knows
    settings = TrainSettings.from_flat(iterations=2, hidden="3:tanh", descriptor={"radial_rc": 4.0, "radial_n": 3,
                                                                                 "angular_rc": 3.5, "angular_n": 2})
    run_train(str(path), tmp_path / "m.pt", settings, test_fraction=0.25, progress=False, use_cache=False, keys=keys)
    from pyita.model import load_potential

    assert load_potential(tmp_path / "m.pt").metadata["label_keys"] == {"energy": "dft_E", "forces": "dft_F"}
    with pytest.raises(InputError, match="no energy"):
        run_train(str(path), tmp_path / "m2.pt", settings, progress=False, use_cache=False)


def test_check_takes_keys(tmp_path, structures):
    from pyita.check.check import select_parents

    path = frames_with(tmp_path / "dft.xyz", structures, "REF_energy", "REF_forces",
                       lambda k, atoms: atoms.info.update(energy=0.0))
    with pytest.raises(InputError, match="--energy-key"):
        select_parents(str(path), 2, 0)
    _, chosen = select_parents(str(path), 4, 0, LabelKeys("REF_energy"))
    assert [s.energy for s in chosen] == pytest.approx([s.energy for s in structures], abs=1e-9)


def test_experiment_config_keys_reach_the_pool(tmp_path, structures):
    from pyita.experiment.config import parse_config
    from pyita.experiment.protocol import load_pool

    path = frames_with(tmp_path / "dft.xyz", emt_structures(6, seed=2), "dft_E", "dft_F")
    raw = {"experiment": {"data": str(path), "energy_key": "dft_E", "forces_key": "dft_F", "trials": 1},
           "condition": [{"name": "forces", "trainer": {"force_weight": 0.1}}]}
    config = parse_config(raw, tmp_path / "x.toml")
    pool, _ = load_pool(config)
    assert len(pool) == 6 and all(s.forces is not None for s in pool)
    assert config.as_dict()["energy_key"] == "dft_E"
    assert "energy_key" not in parse_config({"experiment": {"data": str(path)}}, tmp_path / "x.toml").as_dict()
    with pytest.raises(InputError, match=r"energy_key must be .*got 3"):
        parse_config({"experiment": {"data": str(path), "energy_key": 3}}, tmp_path / "x.toml")


def test_structure_from_ase_of_a_derived_frame_needs_no_forces_key(structures):
    atoms = structures[0].to_ase()
    atoms.calc = None
    atoms.info.update(derived=True, parent=0, REF_energy=-1.0)
    s = Structure.from_ase(atoms, "x[0]", LabelKeys("REF_energy", "REF_forces"))
    assert s.energy == -1.0 and s.forces is None and s.is_derived


def test_an_energy_that_is_not_a_number_is_named(tmp_path, structures):
    path = frames_with(tmp_path / "text.xyz", structures[:2], None, "F",
                       lambda k, atoms: atoms.info.update(E="n/a" if k else structures[k].energy))
    with pytest.raises(InputError, match=r"text.xyz\[1\].*'n/a' \(E\) is not a number"):
        read_structures(path, keys=LabelKeys("E", "F"))
