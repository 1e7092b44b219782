"""`pyita augment` writes an aenet training set from any input: for input other than a generate.in, a <Sym>.stp per
species and TYPES energies (given, or fitted to the parents), so that `cd OUT && generate.x generate.in` runs as
written. Checked with the real generate.x (../shared/tools/aenet-2.0.4/bin or AENET_BIN; skipped without it) and
its trnset2ASCII.x, whose header holds the species and atomic energies generate.x wrote into the training set."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import ase.io
import numpy as np
import pytest

from pyita.architecture import ChebyshevSetup
from pyita.errors import PyitaError
from pyita.io import read_structures
from pyita.io.generate_in import read_generate_in

DATA = Path(__file__).resolve().parent / "data" / "aenet" / "xsf"
E_TI, E_O = -1626.66972707, -433.23448532


@pytest.fixture(scope="module")
def generate_x() -> Path:
    from pyita.backends import aenet

    try:
        return aenet.find_executables()["generate"]
    except PyitaError:
        pytest.skip("aenet's generate.x is not installed (../shared/tools/aenet-2.0.4/bin or AENET_BIN)")


def augment_cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "pyita.cli", "augment", *map(str, args), "-q"], cwd=cwd,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    return result


def run_generate(generate_x: Path, out: Path) -> str:
    """generate.x in the output folder, exactly as a user runs it; returns its output."""
    result = subprocess.run([str(generate_x), "generate.in"], cwd=out, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "Error" not in log, log[-2000:]
    gen = read_generate_in(out / "generate.in")
    assert (out / gen.output).is_file() and (out / gen.output).stat().st_size > 0
    return log


def training_set_header(generate_x: Path, out: Path) -> tuple[list[str], list[float], int, list[int]]:
    """Species, atomic energies and number of structures of the training set generate.x wrote, and the feature
    count of each atom of its first structure, as aenet's trnset2ASCII.x prints them."""
    tool = next(iter(sorted(generate_x.parent.glob("trnset2ASCII.x*"))), None)
    if tool is None:
        pytest.skip("aenet's trnset2ASCII.x is not beside generate.x")
    gen = read_generate_in(out / "generate.in")
    subprocess.run([str(tool), gen.output, "set.ascii"], cwd=out, capture_output=True, check=True, timeout=300)
    lines = (out / "set.ascii").read_text().splitlines()
    n_species = int(lines[4])
    species = [s.strip() for s in lines[5:5 + n_species]]
    energies = [float(v.replace("D", "E")) for v in lines[5 + n_species].split()]
    n_structures = int(lines[7 + n_species])
    # first structure: name, "atoms species", energy, then per atom: type, coordinates, forces, count, features
    k = 9 + n_species
    n_atoms = int(lines[k + 1].split()[0])
    k += 3
    counts = []
    for _ in range(n_atoms):
        counts.append(int(lines[k + 3]))
        k += 5
    return species, energies, n_structures, counts


def least_squares_types(parents, species: list[str]) -> list[float]:
    """E_total ≈ Σ_s n_s e_s over the parents (numpy's minimum-norm solution), independently of PyITA's fit."""
    counts = np.array([[p.symbols.count(s) for s in species] for p in parents], dtype=float)
    energies = np.array([p.energy for p in parents])
    return list(np.linalg.lstsq(counts, energies, rcond=None)[0])


def copy_xsf(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    return [Path(shutil.copy(p, folder)) for p in sorted(DATA.glob("*.xsf"))]


def mace_extxyz(path: Path) -> None:
    """The test structures as MACE's default keys hold them: REF_energy in info, REF_forces in arrays."""
    frames = []
    for s in read_structures(DATA):
        atoms = s.copy(energy=None, forces=None).to_ase()
        atoms.info.pop("source", None)
        atoms.info["REF_energy"] = s.energy
        atoms.arrays["REF_forces"] = s.forces
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


def make_input(kind: str, tmp_path: Path) -> str:
    if kind == "xsf-folder":
        copy_xsf(tmp_path / "xsf")
        return "xsf"
    if kind == "glob":
        copy_xsf(tmp_path / "xsf")
        return "xsf/s0*.xsf"
    if kind == "archive":
        files = copy_xsf(tmp_path / "xsf")
        with tarfile.open(tmp_path / "set.tar.gz", "w:gz") as tar:
            for f in files:
                tar.add(f, arcname=f"set/{f.name}")
        return "set.tar.gz"
    mace_extxyz(tmp_path / "mace.extxyz")
    return "mace.extxyz"


@pytest.mark.parametrize("kind", ["extxyz", "xsf-folder", "glob", "archive"])
def test_generate_x_runs_as_written_with_fitted_types(generate_x, tmp_path, kind):
    data = make_input(kind, tmp_path)
    augment_cli(data, "--a", "2", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    out = tmp_path / "out"
    gen = read_generate_in(out / "generate.in")
    assert gen.setups == {"Ti": "Ti.stp", "O": "O.stp"} and (out / "Ti.stp").is_file() and (out / "O.stp").is_file()
    parents = read_structures(DATA)
    assert list(gen.types.values()) == pytest.approx(least_squares_types(parents, ["Ti", "O"]), abs=1e-6)
    log = run_generate(generate_x, out)
    assert int(re.search(r"Number of structures in the data set\s*:\s*(\d+)", log).group(1)) == len(parents) * 3
    species, energies, n_structures, features = training_set_header(generate_x, out)
    assert species == ["Ti", "O"] and n_structures == len(parents) * 3 == len(gen.files)
    assert energies == pytest.approx(list(gen.types.values()), abs=1e-7)
    assert set(features) == {ChebyshevSetup().n_features(2)}   # the default descriptor, as `aenet prepare`


def test_given_types_and_descriptor_reach_the_training_set(generate_x, tmp_path):
    copy_xsf(tmp_path / "xsf")
    augment_cli("xsf", "--a", "1", "--delta", "0.02", "--types", f"Ti={E_TI},O={E_O}", "--radial-rc", "6.0",
                "--radial-n", "10", "--angular-n", "3", "--out", "out", cwd=tmp_path)
    out = tmp_path / "out"
    assert "radial_Rc = 6.0  radial_N = 10 angular_Rc = 6.5  angular_N = 3" in (out / "O.stp").read_text()
    run_generate(generate_x, out)
    species, energies, _, features = training_set_header(generate_x, out)
    assert species == ["Ti", "O"] and energies == pytest.approx([E_TI, E_O], abs=1e-7)
    assert set(features) == {ChebyshevSetup(radial_rc=6.0, radial_n=10, angular_n=3).n_features(2)} == {30}


@pytest.mark.slow
def test_sample_input(generate_x, tmp_path):
    augment_cli("sample:tio2-diverse", "--a", "0.05", "--delta", "0.03", "--out", "out", cwd=tmp_path)
    out = tmp_path / "out"
    gen = read_generate_in(out / "generate.in")
    parents = read_structures("sample:tio2-diverse")
    species = list(gen.types)
    assert set(species) == {"Ti", "O"}
    assert list(gen.types.values()) == pytest.approx(least_squares_types(parents, species), abs=1e-6)
    run_generate(generate_x, out)
    got_species, energies, n_structures, _ = training_set_header(generate_x, out)
    assert got_species == species and energies == pytest.approx(list(gen.types.values()), abs=1e-7)
    assert n_structures == len(gen.files) == len(parents) + int(0.05 * len(parents))


# ------------------------------------------------------------------------ without aenet: what is written, refused

def test_placeholder_types_of_an_input_generate_in_are_fitted_and_given_ones_win(tmp_path):
    """A generate.in whose TYPES are all 0.0 (placeholders) gets fitted ones; --types replaces the input's."""
    from pyita.augment import AugmentSettings
    from pyita.augment.run import OutputOptions, run_augment

    copy_xsf(tmp_path / "xsf")
    names = "\n".join(f"xsf/{p.name}" for p in sorted(DATA.glob("*.xsf")))
    (tmp_path / "Ti.stp").write_text("setup\n")
    (tmp_path / "O.stp").write_text("setup\n")
    gen = tmp_path / "generate.in"
    gen.write_text(f"OUTPUT x.train\nTYPES\n2\nTi 0.0\nO 0.0\nSETUPS\nTi Ti.stp\nO O.stp\nFILES\n6\n{names}\n")
    summary = run_augment(gen, tmp_path / "a", AugmentSettings(a=1), progress=False)
    written = read_generate_in(tmp_path / "a" / "generate.in")
    expected = least_squares_types(read_structures(DATA), ["Ti", "O"])
    assert list(written.types.values()) == pytest.approx(expected, abs=1e-6)
    assert summary["aenet"]["reference_energies_origin"] == {"Ti": "fitted", "O": "fitted"}
    assert (tmp_path / "a" / "Ti.stp").read_text() == "setup\n"   # the input's SETUPS, copied
    run_augment(gen, tmp_path / "b", AugmentSettings(a=1), progress=False,
                output=OutputOptions(types={"Ti": E_TI}))
    written = read_generate_in(tmp_path / "b" / "generate.in")
    assert written.types["Ti"] == E_TI and written.types["O"] != 0.0
    assert "given by --types" in (tmp_path / "b" / "generate.in").read_text()


@pytest.mark.parametrize("options, words", [
    ({"fmt": "xsf", "config_type": "mine"}, "--config-type applies to --format extxyz"),
    ({"fmt": "extxyz", "types": {"Ti": -1.0}}, "--types apply to --format xsf"),
    ({"fmt": "extxyz", "descriptor": ChebyshevSetup(radial_rc=6.0)}, "descriptor options (--radial-rc …) apply"),
    ({"fmt": "extxyz", "config_type": "two words"}, "--config-type must be one word"),
])
def test_output_options_the_output_cannot_use_are_refused_before_writing(tmp_path, options, words):
    from pyita.augment import AugmentSettings
    from pyita.augment.run import OutputOptions, run_augment

    with pytest.raises(PyitaError, match=re.escape(words)):
        run_augment("sample:tio2-md", tmp_path / "out", AugmentSettings(a=1), output=OutputOptions(**options),
                    progress=False)
    assert not (tmp_path / "out").exists()


def test_descriptor_options_with_a_generate_in_are_refused(tmp_path):
    copy_xsf(tmp_path / "xsf")
    (tmp_path / "generate.in").write_text("OUTPUT x.train\nTYPES\n2\nTi -1.0\nO -2.0\nSETUPS\nTi Ti.stp\nO O.stp\n"
                                          "FILES\n1\nxsf/s01.xsf\n")
    result = subprocess.run([sys.executable, "-m", "pyita.cli", "augment", "generate.in", "--a", "1", "--delta",
                             "0.03", "--radial-rc", "6", "--out", "out"], cwd=tmp_path, capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert result.returncode == 2 and "names its own in SETUPS" in result.stderr
    assert not (tmp_path / "out").exists()
