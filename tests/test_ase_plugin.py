"""The `aenet-xsf` ASE io format (entry point): energies in eV and forces in eV/Å, reading and writing."""

from __future__ import annotations

import io

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.formats import ioformats

from pyita.io.xsf import DERIVED_MARK, read_xsf
from pyita.io.xsf_write import format_xsf
from pyita.structure import Structure

TEXT = """\
# total energy = -1234.56789012 eV

CRYSTAL
PRIMVEC
        4.00000000     0.00000000     0.00000000
        0.00000000     5.00000000     0.00000000
        0.00000000     0.00000000     6.00000000
PRIMCOORD
2 1
Ti      0.10000000     0.20000000     0.30000000     1.00000000    -2.00000000     0.50000000
O       1.10000000     1.20000000     1.30000000    -0.25000000     0.75000000    -1.50000000
"""


@pytest.fixture
def xsf_file(tmp_path):
    path = tmp_path / "s.xsf"
    path.write_text(TEXT)
    return path


def test_format_is_registered_through_the_entry_point():
    fmt = ioformats["aenet-xsf"]
    assert fmt.module_name == "pyita.io.ase_plugin"
    assert fmt.can_read and fmt.can_write and fmt.single


def test_read_gives_ev_and_ev_per_angstrom(xsf_file):
    atoms = ase.io.read(xsf_file, format="aenet-xsf")
    assert atoms.get_chemical_symbols() == ["Ti", "O"]
    assert atoms.get_potential_energy() == -1234.56789012
    np.testing.assert_array_equal(atoms.get_forces(), [[1.0, -2.0, 0.5], [-0.25, 0.75, -1.5]])
    np.testing.assert_array_equal(atoms.get_positions()[1], [1.1, 1.2, 1.3])
    assert atoms.pbc.all() and np.allclose(atoms.cell.lengths(), [4, 5, 6])


def test_ase_own_xsf_reader_gets_these_files_wrong(xsf_file):
    """Why the plugin exists: ASE's `xsf` drops the energy and scales the force columns by Hartree."""
    theirs = ase.io.read(xsf_file, format="xsf")
    ours = ase.io.read(xsf_file, format="aenet-xsf")
    theirs_forces = theirs.calc.results.get("forces") if theirs.calc is not None else None
    if theirs_forces is not None:
        np.testing.assert_allclose(theirs_forces, ours.get_forces() * units.Hartree, rtol=1e-12)
    assert theirs.calc is None or "energy" not in theirs.calc.results


def test_write_then_read_back(tmp_path):
    atoms = Atoms("CuCu", positions=[[0, 0, 0], [1.8, 1.8, 0.1]], cell=[3.6, 3.6, 3.6], pbc=True)
    forces = np.array([[0.125, -0.25, 0.5], [-0.125, 0.25, -0.5]])
    atoms.calc = SinglePointCalculator(atoms, energy=-7.25, forces=forces)
    path = tmp_path / "cu.xsf"
    ase.io.write(path, atoms, format="aenet-xsf")
    s = read_xsf(path, require_labels=True)  # aenet's rules: energy line, PRIMCOORD, force columns
    assert s.energy == -7.25 and s.symbols == ["Cu", "Cu"]
    np.testing.assert_array_equal(s.forces, forces)
    np.testing.assert_allclose(s.positions, atoms.positions, atol=5e-11)
    assert path.read_text().startswith("# total energy = -7.2500000000 eV\n")
    back = ase.io.read(path, format="aenet-xsf")
    assert back.get_potential_energy() == -7.25
    np.testing.assert_array_equal(back.get_forces(), forces)


def test_isolated_molecule(tmp_path):
    atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.calc = SinglePointCalculator(atoms, energy=-14.2, forces=np.zeros((3, 3)))
    buffer = io.StringIO()
    ase.io.write(buffer, atoms, format="aenet-xsf")
    assert "ATOMS" in buffer.getvalue() and "PRIMVEC" not in buffer.getvalue()
    buffer.seek(0)
    back = ase.io.read(buffer, format="aenet-xsf")
    assert not back.pbc.any() and back.get_potential_energy() == -14.2


def test_cohesive_energy_kind_survives(tmp_path):
    path = tmp_path / "c.xsf"
    path.write_text(TEXT.replace("total energy", "cohesive energy"))
    atoms = ase.io.read(path, format="aenet-xsf")
    assert atoms.info["energy_kind"] == "cohesive"
    ase.io.write(tmp_path / "c2.xsf", atoms, format="aenet-xsf")
    assert (tmp_path / "c2.xsf").read_text().startswith("# cohesive energy = ")


def test_derived_files_have_no_force_labels(tmp_path):
    s = read_xsf_text(TEXT)
    s.comments = [f"{DERIVED_MARK} parent.xsf"]
    path = tmp_path / "d.xsf"
    path.write_text(format_xsf(s))
    atoms = ase.io.read(path, format="aenet-xsf")
    assert atoms.get_potential_energy() == -1234.56789012
    assert "forces" not in atoms.calc.results
    assert atoms.info["derived"] is True and atoms.info["comments"][0].startswith(DERIVED_MARK)
    # written back through ASE it is still a derived file with its placeholder columns
    ase.io.write(tmp_path / "d2.xsf", atoms, format="aenet-xsf")
    again = read_xsf(tmp_path / "d2.xsf")
    assert again.info["derived"] and again.forces is None
    np.testing.assert_array_equal(again.info["placeholder_forces"], s.forces)


def test_bad_file_raises_a_clear_error(tmp_path):
    path = tmp_path / "bad.xsf"
    path.write_text(TEXT.replace("2 1", "3 1"))
    with pytest.raises(Exception) as info:
        ase.io.read(path, format="aenet-xsf")
    assert "bad.xsf" in str(info.value) and "3 atoms" in str(info.value)


@pytest.mark.tio2
def test_real_tio2_file(tio2_xsf_dir):
    path = tio2_xsf_dir / "structure0001.xsf"
    atoms = ase.io.read(path, format="aenet-xsf")
    ref = read_xsf(path)
    assert atoms.get_potential_energy() == ref.energy
    np.testing.assert_array_equal(atoms.get_forces(), ref.forces)


def read_xsf_text(text: str) -> Structure:
    from pyita.io.xsf import parse_xsf

    return parse_xsf(text.splitlines())
