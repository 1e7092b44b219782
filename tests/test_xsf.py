"""aenet XSF reader/writer: exact round trips, aenet's rules, and one clear error (file + line) per bad input."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyita.errors import InputError
from pyita.io.xsf import DERIVED_MARK, parse_xsf, read_xsf, read_xsf_layout
from pyita.io.xsf_write import XsfTemplate, format_xsf, write_xsf
from pyita.structure import Structure

# A periodic aenet file as in aenet-formats.md (line numbers matter below: they are written next to the lines).
PERIODIC = """\
# total energy = -1234.56789012 eV
                                                              
CRYSTAL
PRIMVEC
        4.00000000     0.00000000     0.00000000
        0.00000000     5.00000000     0.00000000
       -1.00000000    -1.00000000     6.00000000
PRIMCOORD
3 1
Ti      0.10000000     0.20000000     0.30000000     1.00000000    -2.00000000     0.50000000
O       1.10000000     1.20000000     1.30000000    -0.25000000     0.75000000    -1.50000000
O       2.10000000     2.20000000     2.30000000     0.12500000    -0.37500000     2.00000000
"""
#            line:  1 energy, 2 blank, 3 CRYSTAL, 4 PRIMVEC, 5-7 vectors, 8 PRIMCOORD, 9 "3 1", 10-12 atoms

ISOLATED = """\
# cohesive energy = -3.50000000 eV

ATOMS
H       0.00000000     0.00000000     0.00000000     0.10000000     0.00000000     0.00000000
H       0.74000000     0.00000000     0.00000000    -0.10000000     0.00000000     0.00000000
"""


def lines_of(text: str) -> list[str]:
    return text.splitlines()


def replace_line(text: str, lineno: int, new: str) -> str:
    lines = text.splitlines()
    lines[lineno - 1] = new
    return "\n".join(lines) + "\n"


def simple_parse(text: str):
    """An independent minimal reader (str.split), to check PyITA's reader against the file itself."""
    lines = text.splitlines()
    energy = float(re.search(r"total energy\s*=\s*(\S+)", text).group(1))
    k = next(i for i, line in enumerate(lines) if line.strip() == "PRIMVEC")
    cell = np.array([[float(v) for v in lines[k + j].split()] for j in (1, 2, 3)])
    k = next(i for i, line in enumerate(lines) if line.strip() == "PRIMCOORD")
    n = int(lines[k + 1].split()[0])
    rows = [lines[k + 2 + j].split() for j in range(n)]
    return (energy, cell, [r[0] for r in rows], np.array([[float(v) for v in r[1:4]] for r in rows]),
            np.array([[float(v) for v in r[4:7]] for r in rows]))


def expect_error(text: str, line: int | None, *words: str, path: str = "bad.xsf") -> InputError:
    with pytest.raises(InputError) as info:
        parse_xsf(lines_of(text), path)
    err = info.value
    assert err.path == path
    assert err.line == line, f"expected line {line}, got {err.line}: {err}"
    message = str(err)
    assert message.startswith(f"{path}, line {line}:") if line is not None else message.startswith(path)
    for word in words:
        assert word.lower() in message.lower(), message
    return err


# --------------------------------------------------------------------------------------------------- reading

def test_periodic_file_values():
    s = parse_xsf(lines_of(PERIODIC), "p.xsf")
    assert s.energy == -1234.56789012 and s.energy_kind == "total"
    assert s.symbols == ["Ti", "O", "O"]
    np.testing.assert_array_equal(s.cell, [[4, 0, 0], [0, 5, 0], [-1, -1, 6]])
    np.testing.assert_array_equal(s.positions[1], [1.1, 1.2, 1.3])
    np.testing.assert_array_equal(s.forces[0], [1.0, -2.0, 0.5])
    np.testing.assert_array_equal(s.forces[2], [0.125, -0.375, 2.0])
    assert s.source == "p.xsf" and s.info == {}


def test_isolated_file_and_cohesive_energy():
    s = parse_xsf(lines_of(ISOLATED))
    assert s.cell is None and not s.periodic
    assert s.energy == -3.5 and s.energy_kind == "cohesive"
    np.testing.assert_array_equal(s.positions[:, 0], [0.0, 0.74])
    np.testing.assert_array_equal(s.forces[:, 0], [0.1, -0.1])


@pytest.mark.parametrize("line, kind, value", [
    ("# total energy = -19074.58973157 eV", "total", -19074.58973157),
    ("# total energy = -19074.58973157", "total", -19074.58973157),  # trailing eV optional
    ("total energy = -5.25 eV", "total", -5.25),  # leading '#' optional
    ("#   total energy=-5.25", "total", -5.25),
    ("# cohesive energy = -3.0 eV", "cohesive", -3.0),
    ("# total energy = -1.5d0 eV", "total", -1.5),  # Fortran exponent
])
def test_energy_line_forms(line, kind, value):
    s = parse_xsf(lines_of(replace_line(PERIODIC, 1, line)))
    assert (s.energy_kind, s.energy) == (kind, value)


def test_no_energy_line_is_allowed_unless_labels_are_required():
    text = replace_line(PERIODIC, 1, "# computed with some code")
    s = parse_xsf(lines_of(text))
    assert s.energy is None and s.comments == ["computed with some code"]
    with pytest.raises(InputError, match="energy"):
        parse_xsf(lines_of(text), "x.xsf", require_labels=True)


def test_capitalised_total_energy_is_rejected():
    err = expect_error(replace_line(PERIODIC, 1, "# Total Energy = -5.0 eV"), 1, "lower-case")
    assert "Total Energy" in str(err)


def test_cohesive_capitalised_rejected():
    expect_error(replace_line(PERIODIC, 1, "# Cohesive energy = -5.0 eV"), 1, "lower-case")


def test_total_energy_without_equals_is_rejected():
    expect_error(replace_line(PERIODIC, 1, "# total energy: -5.0 eV"), 1, "=")


def test_second_energy_line_rejected():
    text = replace_line(PERIODIC, 2, "# total energy = 1.0 eV")
    expect_error(text, 2, "second energy")


def test_atomic_numbers_are_rejected():
    text = replace_line(PERIODIC, 11, "8       1.10000000     1.20000000     1.30000000    -0.25 0.75 -1.5")
    expect_error(text, 11, "atomic numbers", "'8'")


def test_unknown_symbol_is_rejected():
    expect_error(replace_line(PERIODIC, 12, "Xx 1 2 3 4 5 6"), 12, "unknown element", "Xx")


@pytest.mark.parametrize("keep, line, words", [
    (5, 5, ["truncated", "PRIMVEC"]),     # ends inside the lattice vectors
    (8, 8, ["truncated", "PRIMCOORD"]),   # ends right after PRIMCOORD
    (11, 11, ["3 atoms", "only 2", "ends"]),  # ends after the second atom
    (3, 3, ["no atoms"]),                 # ends after CRYSTAL
])
def test_truncated_file(keep, line, words):
    text = "\n".join(PERIODIC.splitlines()[:keep]) + "\n"
    expect_error(text, line, *words)


def test_fewer_atoms_than_primcoord_says_ends_at_blank_line():
    text = PERIODIC.replace("3 1", "4 1") + "\n# a trailing comment\n"
    # the atom block ends at the blank line 13 where a fourth atom was expected
    err = expect_error(text, 13, "4 atoms", "only 3", "blank line")
    assert "line 9" in str(err)  # and it says where the count is


def test_more_atoms_than_primcoord_says():
    expect_error(PERIODIC.replace("3 1", "2 1"), 12, "more than the 2 atoms")


def test_comment_directly_after_last_atom_is_rejected():
    expect_error(PERIODIC + "# provenance\n", 13, "after the atom block")


def test_isolated_comment_after_last_atom_is_rejected():
    expect_error(ISOLATED + "# provenance\n", 6, "'#'")


def test_missing_forces_on_some_lines():
    text = replace_line(PERIODIC, 11, "O       1.10000000     1.20000000     1.30000000")
    expect_error(text, 11, "forces missing")
    text = replace_line(PERIODIC, 10, "Ti      0.10000000     0.20000000     0.30000000")
    expect_error(text, 10, "forces missing")


def test_no_forces_at_all_is_fine_unless_labels_are_required():
    text = PERIODIC
    for k in (10, 11, 12):
        text = replace_line(text, k, " ".join(text.splitlines()[k - 1].split()[:4]))
    s = parse_xsf(lines_of(text))
    assert s.forces is None
    with pytest.raises(InputError) as info:
        parse_xsf(lines_of(text), "f.xsf", require_labels=True)
    assert info.value.line == 10 and "force" in str(info.value)


def test_five_or_six_columns_rejected():
    expect_error(replace_line(PERIODIC, 12, "O 2.1 2.2 2.3 0.1 0.2"), 12, "6 fields")


@pytest.mark.parametrize("lineno, new, words", [
    (12, "O 2.1 2.2 nan 0.125 -0.375 2.0", ["coordinate", "not finite"]),
    (11, "O 1.1 1.2 1.3 -0.25 inf -1.5", ["force", "not finite"]),
    (10, "Ti 0.1 0.2 0.3 1.0 -2.0 -Infinity", ["force", "not finite"]),
    (1, "# total energy = NaN eV", ["energy", "not finite"]),
    (6, "0.0 5.0 inf", ["lattice vector", "not finite"]),
    (11, "O 1.1 1.2 1.3 -0.25 0.75 abc", ["force", "'abc' is not a number"]),
    (12, "O 2.1 2,2 2.3 0.1 0.2 0.3", ["coordinate", "'2,2'"]),
    (1, "# total energy = -5.0.1 eV", ["energy", "not a number"]),
    (5, "4.0 0.0", ["PRIMVEC row needs 3 numbers"]),
    (9, "three 1", ["atom count"]),
    (9, "0 1", ["positive"]),
])
def test_bad_values_name_their_line(lineno, new, words):
    expect_error(replace_line(PERIODIC, lineno, new), lineno, *words)


def test_singular_cell_rejected():
    expect_error(replace_line(PERIODIC, 7, "8.0 0.0 0.0"), 4, "linearly dependent")


def test_read_xsf_errors_name_the_file(tmp_path):
    path = tmp_path / "structure0042.xsf"
    path.write_text(replace_line(PERIODIC, 11, "O 1.1 1.2 1.3 x 0.75 -1.5"))
    with pytest.raises(InputError) as info:
        read_xsf(path)
    assert str(info.value).startswith(f"{path}, line 11:")
    with pytest.raises(InputError, match="cannot read"):
        read_xsf(tmp_path / "missing.xsf")
    (tmp_path / "binary.xsf").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match="cannot read"):
        read_xsf(tmp_path / "binary.xsf")


def test_extra_columns_take_the_slow_path_with_the_same_values():
    """aenet ignores columns beyond the seventh; the bulk reader hands such files to the line reader."""
    fast = parse_xsf(lines_of(PERIODIC))
    slow = parse_xsf(lines_of(replace_line(PERIODIC, 11, PERIODIC.splitlines()[10] + "   99.0")))
    for name in ("positions", "forces", "cell"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))
    assert (fast.symbols, fast.energy) == (slow.symbols, slow.energy)


def test_derived_file_has_no_force_labels():
    text = f"# total energy = -1234.5 eV\n# {DERIVED_MARK} parents/p1.xsf\n# pyita note: placeholders\n" \
        + PERIODIC.split("\n", 1)[1]
    s = parse_xsf(lines_of(text))
    assert s.forces is None
    assert s.info["derived"] is True and s.info["parent_source"] == "parents/p1.xsf"
    np.testing.assert_array_equal(s.info["placeholder_forces"][0], [1.0, -2.0, 0.5])
    # generate.x needs force columns, which are present: a derived file still satisfies require_labels
    assert parse_xsf(lines_of(text), require_labels=True).energy == -1234.5
    # written back, the placeholder columns are kept
    again = parse_xsf(format_xsf(s).splitlines())
    np.testing.assert_array_equal(again.info["placeholder_forces"], s.info["placeholder_forces"])


# --------------------------------------------------------------------------------------------------- writing

def structure(periodic=True, kind="total", comments=()) -> Structure:
    return Structure(symbols=["Ti", "O", "O"],
                     positions=[[0.1, 0.2, 0.3], [1.123456789012, -1.2, 1.3], [2.1, 2.2, -0.000000000049]],
                     cell=[[4, 0, 0], [0, 5, 0], [-1, -1, 6]] if periodic else None,
                     energy=-1234.567890123456, forces=[[1, -2, 0.5], [-0.25, 0.75, -1.5], [0.125, -0.375, 2]],
                     energy_kind=kind, comments=list(comments))


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("kind", ["total", "cohesive"])
def test_format_parse_format_is_identical(periodic, kind):
    s = structure(periodic, kind, comments=["made by a test", "second comment"])
    text = format_xsf(s)
    again = parse_xsf(text.splitlines())
    assert format_xsf(again) == text
    assert again.energy_kind == kind and again.comments == s.comments
    assert (again.cell is None) == (not periodic)
    np.testing.assert_allclose(again.positions, s.positions, rtol=0, atol=5e-11)
    np.testing.assert_allclose(again.forces, s.forces, rtol=0, atol=5e-11)
    assert abs(again.energy - s.energy) <= 5e-11


def test_written_layout_follows_aenet_rules():
    text = format_xsf(structure(comments=["provenance line"]))
    lines = text.splitlines()
    assert lines[0] == "# total energy = -1234.5678901235 eV"
    assert lines[1] == "# provenance line" and lines[2] == ""
    assert lines[3:5] == ["CRYSTAL", "PRIMVEC"]
    assert lines[8:10] == ["PRIMCOORD", "3 1"]
    assert [ln.split()[0] for ln in lines[10:]] == ["Ti", "O", "O"]
    assert all(len(ln.split()) == 7 for ln in lines[10:])
    # nothing after the last atom line (a comment there crashes aenet)
    assert text.endswith("\n") and not text.endswith("\n\n")
    assert lines[-1].startswith("O ")
    isolated = format_xsf(structure(periodic=False)).splitlines()
    assert isolated[2] == "ATOMS" and "PRIMVEC" not in isolated and len(isolated) == 6


def test_no_forces_written_as_four_columns():
    s = structure()
    s.forces = None
    lines = format_xsf(s).splitlines()
    assert all(len(ln.split()) == 4 for ln in lines[-3:])
    np.testing.assert_allclose(parse_xsf(lines).positions, s.positions, atol=5e-11)


def test_explicit_forces_override():
    s = structure()
    placeholders = np.full((3, 3), 7.0)
    again = parse_xsf(format_xsf(s, forces=placeholders).splitlines())
    np.testing.assert_array_equal(again.forces, placeholders)
    with pytest.raises(ValueError, match="shape"):
        format_xsf(s, forces=np.zeros((2, 3)))


@pytest.mark.parametrize("comment", ["total energy = 5", "the total energy is high", "Total Energy = 3 eV",
                                     "two\nlines", "cohesive energy = 1"])
def test_comments_that_would_break_the_file_are_refused(comment):
    with pytest.raises(ValueError):
        format_xsf(structure(comments=[comment]))


def test_write_xsf(tmp_path):
    s = structure()
    write_xsf(tmp_path / "s.xsf", s)
    assert (tmp_path / "s.xsf").read_text() == format_xsf(s)


def test_template_single_atom_move_matches_full_formatting():
    s = structure(comments=["c"])
    template = XsfTemplate(s)
    for k in range(3):
        moved = s.copy()
        moved.positions[k] += [0.0, -0.03, 0.0]
        xyz = moved.positions[k].tolist()
        assert template.text_one(s.energy, ["c"], "total", k, xyz) == format_xsf(moved)
        assert template.text(s.energy, ["c"], moved={k: xyz}) == format_xsf(moved)
    shifted = s.copy()
    shifted.positions += 0.01
    assert template.text(s.energy, ["c"], positions=shifted.positions) == format_xsf(shifted)


def test_verbatim_template_keeps_the_parent_lines(tmp_path):
    path = tmp_path / "p.xsf"
    path.write_text(PERIODIC)
    parent, lines, layout = read_xsf_layout(path)
    assert layout == (2, 9)
    template = XsfTemplate.verbatim(parent, lines, layout)
    moved = parent.positions[1] + [0.03, 0.0, 0.0]
    text = template.text_one(-1.0, ["derived"], "total", 1, moved.tolist())
    out = text.splitlines()
    assert out[:3] == ["# total energy = -1.0000000000 eV", "# derived", ""]
    original = PERIODIC.splitlines()
    assert out[3:10] == original[2:9]            # CRYSTAL … "3 1" exactly as in the parent file
    assert out[10] == original[9] and out[12] == original[11]  # unmoved atoms byte for byte
    assert out[11] != original[10]
    again = parse_xsf(out)
    np.testing.assert_allclose(again.positions[1], moved, atol=5e-11)
    np.testing.assert_array_equal(again.positions[[0, 2]], parent.positions[[0, 2]])
    np.testing.assert_array_equal(again.forces, parent.forces)
    # a file with a comment inside the cell part is not reused verbatim
    path.write_text(PERIODIC.replace("PRIMVEC", "# note\nPRIMVEC"))
    assert read_xsf_layout(path)[2] is None


# -------------------------------------------------------------------------------------- property-based tests

SYMBOLS = ["H", "C", "O", "Ti", "Cu", "Na", "Cl", "Si", "Zr", "U"]
coordinate = st.floats(-500, 500, allow_nan=False, allow_infinity=False)
force = st.floats(-200, 200, allow_nan=False, allow_infinity=False)


@st.composite
def structures(draw):
    n = draw(st.integers(1, 8))
    periodic = draw(st.booleans())
    cell = None
    if periodic:
        lengths = draw(st.lists(st.floats(2, 40), min_size=3, max_size=3))
        tilt = draw(st.lists(st.floats(-1, 1), min_size=3, max_size=3))
        cell = np.diag(lengths)
        cell[2, 0], cell[2, 1], cell[1, 0] = tilt
    labelled = draw(st.booleans())
    return Structure(
        symbols=draw(st.lists(st.sampled_from(SYMBOLS), min_size=n, max_size=n)),
        positions=np.array(draw(st.lists(coordinate, min_size=3 * n, max_size=3 * n))).reshape(n, 3),
        cell=cell,
        energy=draw(st.floats(-1e5, 1e5)) if labelled else None,
        forces=np.array(draw(st.lists(force, min_size=3 * n, max_size=3 * n))).reshape(n, 3) if labelled else None,
        energy_kind=draw(st.sampled_from(["total", "cohesive"])),
        comments=draw(st.lists(st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
                               .map(str.strip).filter(lambda c: "energy" not in c.lower() and c), max_size=3)),
    )


@settings(max_examples=150, deadline=None)
@given(structures())
def test_random_structures_round_trip(s):
    text = format_xsf(s)
    again = parse_xsf(text.splitlines())
    assert format_xsf(again) == text
    assert again.symbols == s.symbols
    np.testing.assert_allclose(again.positions, s.positions, rtol=0, atol=5.1e-11)
    if s.cell is not None:
        np.testing.assert_allclose(again.cell, s.cell, rtol=0, atol=5.1e-11)
    if s.energy is not None:
        assert abs(again.energy - s.energy) <= 5.1e-11
        np.testing.assert_allclose(again.forces, s.forces, rtol=0, atol=5.1e-11)
    else:
        assert again.energy is None and again.forces is None


KEYWORD_LINES = ["CRYSTAL", "PRIMVEC", "PRIMCOORD", "ATOMS", "CONVVEC", "3 1", "1 1", "", "# comment",
                 "# total energy = -1.0 eV", "# cohesive energy = x", "Ti 0 0 0 1 1 1", "O 1 1 1",
                 "1.0 0.0 0.0", "0.0 1.0 0.0", "0.0 0.0 1.0", "nan 0 0", "Ti 0 0 0 1 1", "22 0 0 0"]
garbage_line = st.one_of(st.sampled_from(KEYWORD_LINES), st.text(max_size=40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(garbage_line, max_size=15))
def test_garbage_never_raises_anything_but_input_error(lines):
    try:
        s = parse_xsf(lines, "fuzz.xsf")
    except InputError as exc:
        assert exc.path == "fuzz.xsf"
        assert exc.line is None or 1 <= exc.line <= max(len(lines), 1)
    else:
        assert len(s) > 0 and np.isfinite(s.positions).all()


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_files_never_raise_anything_but_input_error(data):
    lines = data.draw(st.sampled_from([PERIODIC, ISOLATED])).splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        k = data.draw(st.integers(0, len(lines) - 1)) if lines else 0
        action = data.draw(st.sampled_from(["delete", "duplicate", "token", "truncate", "insert"]))
        if not lines:
            break
        if action == "delete":
            del lines[k]
        elif action == "duplicate":
            lines.insert(k, lines[k])
        elif action == "truncate":
            lines = lines[:k]
        elif action == "insert":
            lines.insert(k, data.draw(garbage_line))
        else:
            tokens = lines[k].split() or [""]
            j = data.draw(st.integers(0, len(tokens) - 1))
            tokens[j] = data.draw(st.sampled_from(["nan", "inf", "x", "", "1e999", "22", "Xx", "=", "1d5",
                                                   "-0.0", "#"]))
            lines[k] = " ".join(tokens)
    try:
        s = parse_xsf(lines, "mut.xsf")
    except InputError as exc:
        assert exc.path == "mut.xsf"
    else:
        assert np.isfinite(s.positions).all()
        assert s.forces is None or np.isfinite(s.forces).all()
        assert s.energy is None or math.isfinite(s.energy)


# ------------------------------------------------------------------------------------------ real TiO2 data

@pytest.mark.tio2
def test_real_tio2_file_reads_exactly_and_writes_the_same_numbers(tio2_xsf_dir, tmp_path):
    path = tio2_xsf_dir / "structure0001.xsf"
    text = path.read_text()
    energy, cell, symbols, positions, forces = simple_parse(text)
    s = read_xsf(path, require_labels=True)
    assert s.energy == energy and s.symbols == symbols
    np.testing.assert_array_equal(s.cell, cell)
    np.testing.assert_array_equal(s.positions, positions)
    np.testing.assert_array_equal(s.forces, forces)
    out = tmp_path / "again.xsf"
    write_xsf(out, s)
    e2, c2, sym2, p2, f2 = simple_parse(out.read_text())
    assert e2 == energy and sym2 == symbols
    for a, b in ((c2, cell), (p2, positions), (f2, forces)):
        np.testing.assert_array_equal(a, b)
    # the same numbers, token by token: only trailing zeros are added (8 → 10 decimals)
    original = [ln.split() for ln in text.splitlines()[-len(s):]]
    written = [ln.split() for ln in out.read_text().splitlines()[-len(s):]]
    for a, b in zip(original, written):
        assert a[0] == b[0]
        assert all(y == x + "00" for x, y in zip(a[1:], b[1:])), (a, b)


@pytest.mark.tio2
def test_all_real_tio2_files_read_and_a_sample_round_trips(tio2_xsf_dir):
    paths = sorted(tio2_xsf_dir.glob("structure*.xsf"))
    assert len(paths) == 7815
    atoms = 0
    for k, path in enumerate(paths):
        s = read_xsf(path, require_labels=True)
        atoms += len(s)
        if k % 97 == 0:
            again = parse_xsf(format_xsf(s).splitlines())
            assert again.energy == s.energy and again.symbols == s.symbols
            np.testing.assert_array_equal(again.positions, s.positions)
            np.testing.assert_array_equal(again.forces, s.forces)
            np.testing.assert_array_equal(again.cell, s.cell)
    assert atoms == 165229  # the count stated in the data set's README
