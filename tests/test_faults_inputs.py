"""Bad inputs of issue 10, as a user would meet them: non-finite or zero settings, damaged model files, a folder
or a byte-order mark in generate.in, requests that cannot be met in full or at all, near-coincident atoms.
User-facing cases run the CLI as a real subprocess and check the exit status, the one error or warning line,
that the inputs are unchanged and that nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faults import error_line, make_case, nothing_written, run_cli, squeeze, tree_hashes, warning_lines
from pyita.augment import AugmentSettings, augment
from pyita.descriptors import ChebyshevDescriptor
from pyita.errors import InputError, PyitaError
from pyita.model.potential import Potential
from pyita.geometry import NEAR_DISTANCE, close_atoms
from pyita.structure import Structure

AUGMENT = ["--delta", 0.03, "-q"]
SMALL_MODEL = ["--radial-rc", 4.0, "--radial-n", 3, "--angular-rc", 3.5, "--angular-n", 2, "--hidden", "3:tanh",
               "--iterations", 1, "-q"]


@pytest.fixture
def case(tmp_path) -> Path:
    """tmp_path/case/generate.in + xsf/ (six rutile cells of six atoms)."""
    return make_case(tmp_path / "case").parent


def refused(case: Path, out: str, args, *words) -> None:
    """Run the CLI in ``case``: exit 2, one error line holding ``words``, inputs unchanged, nothing written."""
    before = tree_hashes(case)
    error_line(run_cli(*args, "--out", out, cwd=case), *words)
    assert tree_hashes(case) == before
    nothing_written(case, out)


# ------------------------------------------------------------------------------------- 1. settings

@pytest.mark.parametrize("args, words", [
    (["--a", "inf"], ["a must be a finite number, got inf"]),
    (["--a", "0"], ["must be > 0, got 0", "no derived structure"]),
    (["--a", "2", "--max-force", "inf"], ["max-force must be a finite number"]),
])
def test_non_finite_or_zero_settings_are_refused(case, args, words):
    refused(case, "aug", ["augment", "generate.in", *args, *AUGMENT], *words)


@pytest.mark.parametrize("kwargs, words", [
    ({"a": float("inf")}, "a must be a finite"), ({"delta": float("inf")}, "delta must be a finite"),
    ({"cap": float("inf")}, "cap must be a finite"), ({"max_force": float("-inf")}, "max-force must be a finite"),
    ({"a": 0}, "must be > 0"), ({"a": float("nan")}, "must be > 0"),
])
def test_settings_reject_every_non_finite_number(kwargs, words):
    with pytest.raises(PyitaError, match=words):
        AugmentSettings(**{"a": 1, "delta": 0.03, **kwargs})


def test_a_zero_still_means_no_augmentation_in_memory():
    """The trainer (--augment-a 0) and experiment sweeps use a = 0 for "none"; only the command refuses it."""
    parent = Structure(["H", "H"], [[0, 0, 0], [0.8, 0, 0]], energy=-1.0, forces=[[0.1, 0, 0], [-0.1, 0, 0]])
    assert augment([parent], a=0, delta=0.03) == []


# ---------------------------------------------------------------------------------- 2. model files

def _model(path: Path) -> dict:
    potential = Potential(ChebyshevDescriptor(["Ti", "O"], radial_rc=4.0, radial_n=3, angular_rc=3.5, angular_n=2),
                          "3:tanh", {"Ti": -1626.66972707, "O": -433.23448532})
    potential.save(path)
    return torch.load(path, weights_only=True)


def _damage(path: Path, how: str) -> None:
    payload = _model(path)
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
        return
    if how == "empty":
        path.write_bytes(b"")
        return
    if how == "keys":
        del payload["seed"]
        payload["comment"] = "edited by hand"
    elif how == "descriptor":
        payload["descriptor"]["radial_n"] = -1
    elif how == "hidden":
        payload["hidden"] = "3:relu"
    elif how in ("nan", "inf"):
        weight = payload["state_dict"]["networks.nets.1.0.weight"]
        weight[0, 0] = float(how)
    torch.save(payload, path)


@pytest.mark.parametrize("how, words", [
    ("truncated", ["m.pt", "truncated or corrupt model file"]),
    ("keys", ["m.pt", "missing 'seed'", "unexpected 'comment'"]),
    ("hidden", ["m.pt", "architecture", "'3:relu'", "unknown activation"]),
    ("nan", ["m.pt", "weight tensor 'networks.nets.1.0.weight' contains NaN or inf"]),
])
def test_damaged_model_files_give_one_clear_error(case, how, words):
    _damage(case / "m.pt", how)
    refused(case, "pred", ["predict", "m.pt", "generate.in", "-q"], *words)


@pytest.mark.parametrize("how, words", [
    ("empty", "truncated or corrupt"), ("descriptor", "radial_n must be a non-negative integer"),
    ("inf", "contains NaN or inf"),
])
def test_more_damaged_model_files(tmp_path, how, words):
    _damage(tmp_path / "m.pt", how)
    with pytest.raises(InputError, match=words) as caught:
        Potential.load(tmp_path / "m.pt")
    assert caught.value.path == str(tmp_path / "m.pt")


# ------------------------------------------------------------------------------------- 3, 4. generate.in

def test_a_folder_listed_in_files_is_called_a_folder(case):
    gen = case / "generate.in"
    gen.write_text(gen.read_text().replace("xsf/s02.xsf", "xsf"))
    line = gen.read_text().splitlines().index("xsf") + 1
    refused(case, "aug", ["augment", "generate.in", "--a", 2, *AUGMENT],
            f"generate.in, line {line}", "'xsf' is a folder, not a structure file")


def test_a_byte_order_mark_in_generate_in_is_accepted(case):
    gen = case / "generate.in"
    gen.write_bytes(b"\xef\xbb\xbf" + gen.read_bytes())
    before = tree_hashes(case)
    result = run_cli("augment", "generate.in", "--a", 2, *AUGMENT, "--out", "../aug", cwd=case)
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert tree_hashes(case) == before
    assert (case.parent / "aug" / "generate.in").read_text().startswith("OUTPUT")


# ------------------------------------------------------------------------------------ 5. shortfalls

@pytest.mark.parametrize("strategy", ["balanced", "sequential"])
def test_a_shortfall_is_warned_once_and_recorded(case, strategy):
    result = run_cli("augment", "generate.in", "--a", 1000, "--strategy", strategy, *AUGMENT, "--out", "aug",
                     cwd=case)
    assert result.returncode == 0, result.stderr
    (line,) = warning_lines(result)
    for words in (strategy, "made 216 of the 6000", "a = 1000 × 6 parents", "5784 fewer", "6 per atom"):
        assert words in line, line
    run = json.loads((case / "aug" / "run.json").read_text())
    assert (run["counts"]["derived"], run["derived_requested"], run["shortfall"]) == (216, 6000, 5784)
    assert run["shortfall_reason"] == line.removeprefix("warning: ")


def test_random_all_always_makes_a_per_parent(case):
    result = run_cli("augment", "generate.in", "--a", 50, "--strategy", "random-all", *AUGMENT, "--out", "aug",
                     cwd=case)
    assert result.returncode == 0 and not warning_lines(result), result.stderr
    assert json.loads((case / "aug" / "run.json").read_text())["shortfall"] == 0


def test_in_memory_augmentation_warns_about_a_shortfall_too():
    parent = Structure(["H", "H"], [[0, 0, 0], [0.8, 0, 0]], energy=-1.0, forces=[[0.1, 0, 0], [-0.1, 0, 0]])
    with pytest.warns(UserWarning, match="balanced: made 12 of the 20 .* 8 fewer"):
        assert len(augment([parent], a=20, delta=0.03)) == 12


# ------------------------------------------------------------------------------------ 6. nothing to do

@pytest.mark.parametrize("args, words", [
    (["--max-force", 0.001], ["generate.in", "no derived structures",
                              "every atom of every parent has |F| > --max-force 0.001 eV/Å"]),
    (["--max-force", 0.001, "--strategy", "random-all"], ["every parent has an atom with |F| > --max-force"]),
    (["--max-force", 0.001, "--strategy", "sequential"], ["every atom of every parent has |F|"]),
    (["--exclude", "xsf-list.txt"], ["no derived structures: all 6 parents are excluded"]),
    (["--a", 0.1], ["a = 0.1 × 6 parents rounds down to 0"]),
])
def test_no_derived_structure_at_all_is_an_error(case, args, words):
    (case / "xsf-list.txt").write_text("".join(f"xsf/s{k:02d}.xsf\n" for k in range(6)))
    a = [] if "--a" in args else ["--a", 2]
    refused(case, "aug", ["augment", "generate.in", *a, *args, *AUGMENT], *words)


@pytest.mark.parametrize("command", [["augment", "empty.in", "--a", 2, *AUGMENT],
                                     ["train", "empty.in", *SMALL_MODEL], ["predict", "m.pt", "empty.in", "-q"]])
def test_files_zero_is_an_error_for_every_command(case, command):
    gen = case / "generate.in"
    (case / "empty.in").write_text(gen.read_text().split("FILES")[0] + "FILES\n0\n")
    _model(case / "m.pt")
    refused(case, "out", command, "empty.in, line", "FILES lists no structures")


def test_an_ase_file_without_structures_is_an_error(case):
    (case / "blank.xyz").write_text("\n\n")
    (case / "atomless.xyz").write_text("0\n\n")
    refused(case, "aug", ["augment", "blank.xyz", "--a", 2, *AUGMENT], "blank.xyz: file holds no structures")
    refused(case, "aug", ["augment", "atomless.xyz", "--a", 2, *AUGMENT], "atomless.xyz[0]: structure has no atoms")


# ------------------------------------------------------------------------------- 7. near-coincident atoms

def test_near_coincident_parents_are_warned_about_when_augmenting_extxyz(case):
    import ase.io

    from pyita.io import read_structures

    for k in (1, 4):
        squeeze(case / "xsf" / f"s{k:02d}.xsf", 0.06)
    ase.io.write(case / "data.extxyz", [s.to_ase() for s in read_structures(case / "generate.in")])
    before = tree_hashes(case)
    result = run_cli("augment", "data.extxyz", "--a", 2, *AUGMENT, "--out", "../aug", cwd=case)
    assert result.returncode == 0, result.stderr
    (line,) = warning_lines(result)
    for words in ("2 structures have atoms closer than 0.5 Å", "data.extxyz[1] (atoms 3 and 4, 0.060 Å)",
                  "data.extxyz[4] (atoms 3 and 4, 0.060 Å)"):
        assert words in line, line
    assert tree_hashes(case) == before


def test_near_coincident_parents_are_warned_about_when_augmenting_xsf(case):
    squeeze(case / "xsf" / "s01.xsf", 0.06)
    result = run_cli("augment", "generate.in", "--a", 2, *AUGMENT, "--out", "aug", cwd=case)
    assert result.returncode == 0, result.stderr
    (line,) = warning_lines(result)
    assert "s01.xsf: atoms 3 and 4 are only 0.060 Å apart" in line, line


def test_train_and_predict_warn_once_about_near_coincident_atoms_and_refuse_coincident_ones(case, tmp_path):
    for k in range(5):  # five structures: the warning names three and counts the rest
        squeeze(case / "xsf" / f"s{k:02d}.xsf", 0.06 + 0.01 * k)
    before = tree_hashes(case)
    for run in (1, 2):  # the second run takes its features from the cache, and warns all the same
        result = run_cli("train", "generate.in", "--out", f"../m{run}.pt", "--test-fraction", 0, *SMALL_MODEL,
                         cwd=case, PYITA_CACHE=str(tmp_path / "cache"))
        assert result.returncode == 0, result.stderr
        (line,) = warning_lines(result)
        for words in ("5 structures (training data) have atoms closer than 0.5 Å",
                      "xsf/s00.xsf (atoms 3 and 4, 0.060 Å)",
                      "xsf/s02.xsf (atoms 3 and 4, 0.080 Å)", "and 2 more"):
            assert words in line, line
    result = run_cli("predict", "../m1.pt", "xsf/s03.xsf", "--out", "../pred", cwd=case)
    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == ["warning: xsf/s03.xsf: atoms 3 and 4 are only 0.090 Å apart (closer than "
                                     "0.5 Å: an atom listed twice or a broken structure?)"]
    assert tree_hashes(case) == before
    squeeze(case / "xsf" / "s05.xsf", 0.0)
    refused(case, "pred", ["predict", "../m1.pt", "xsf/s05.xsf"], "xsf/s05.xsf: atoms 3 and 4 coincide")
    refused(case, "m3.pt", ["train", "generate.in", *SMALL_MODEL], "xsf/s05.xsf: atoms 3 and 4 coincide")


def test_close_atoms_finds_the_nearest_image_in_skewed_cells():
    rng = np.random.default_rng(7)
    structures, closest = [], []
    while len(structures) < 60:
        cell = rng.normal(0, 1.5, (3, 3)) + np.eye(3) * rng.uniform(3, 6)
        if abs(np.linalg.det(cell)) < 10:
            continue
        n = int(rng.integers(2, 7))
        positions = rng.uniform(-0.3, 1.3, (n, 3)) @ cell
        positions[1] = positions[0] + rng.normal(0, 0.25, 3) + rng.integers(-1, 2, 3) @ cell  # across a face
        periodic = len(structures) % 4 != 0
        images = np.array(np.meshgrid(*[range(-3, 4)] * 3)).reshape(3, -1).T @ cell if periodic else np.zeros((1, 3))
        closest.append(min(np.linalg.norm(positions[b] - positions[a] + images, axis=1).min()
                           for a in range(n) for b in range(a + 1, n)))
        structures.append(Structure(["H"] * n, positions, cell if periodic else None, source=f"s{len(structures)}"))
    found = dict(close_atoms(structures))
    for k, distance in enumerate(closest):
        if distance < NEAR_DISTANCE - 1e-4:
            assert found[k].distance == pytest.approx(distance, abs=1e-4)
        elif distance > NEAR_DISTANCE + 1e-4:
            assert k not in found
    assert 10 < len(found) < 60


def test_large_structures_are_checked_too(monkeypatch):
    """All pairs at once for sizes up to _ALL_PAIRS_MAX pairs, a neighbour list beyond: the same answer."""
    import pyita.geometry

    rng = np.random.default_rng(3)
    cell = np.diag([12.0, 12.0, 12.0])
    grid = np.stack(np.meshgrid(*[np.arange(5) * 2.4] * 3), -1).reshape(-1, 3) + rng.normal(0, 0.05, (125, 3))
    crowded = grid.copy()
    crowded[77] = grid[3] + [0.2, 0.1, 0] + cell[0]  # beside atom 4, across a face
    structures = [Structure(["Si"] * 125, crowded, cell), Structure(["Si"] * 125, grid, cell)]
    for limit in (pyita.geometry._ALL_PAIRS_MAX, 1000):
        monkeypatch.setattr(pyita.geometry, "_ALL_PAIRS_MAX", limit)
        ((index, found),) = close_atoms(structures)
        assert (index, found.i, found.j) == (0, 3, 77)
        assert found.distance == pytest.approx(np.hypot(0.2, 0.1), abs=1e-5)
