"""generate.in (aenet's generate.x input): aenet's rules, round trips, clear errors with line numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyita.errors import InputError
from pyita.io.generate_in import (GenerateIn, format_generate_in, quote_token, read_generate_in,
                                  unquote_token, write_generate_in)

# aenet's TiO2 example header, as in aenet-formats.md (the real atomic reference energies)
TIO2_HEAD = """\
OUTPUT  TiO.train

TYPES
2
Ti  -1626.66972707   | eV
O    -433.23448532   | eV

SETUPS
Ti   Ti.stp
O    O.stp

"""


def make(tmp_path: Path, body: str, files=("a.xsf", "b.xsf"), folder="data") -> Path:
    """generate.in in tmp_path/folder with the listed (existing, empty) structure files."""
    root = tmp_path / folder
    root.mkdir(parents=True, exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    path = root / "generate.in"
    path.write_text(body)
    return path


def files_block(files) -> str:
    return "FILES\n" + f"{len(files)}\n" + "".join(f"{f}\n" for f in files)


def line_of(text: str, needle: str) -> int:
    return next(k + 1 for k, line in enumerate(text.splitlines()) if needle in line)


def test_reads_the_tio2_example(tmp_path):
    path = make(tmp_path, TIO2_HEAD + files_block(["a.xsf", "sub/b.xsf"]), files=["a.xsf", "sub/b.xsf"])
    gen = read_generate_in(path)
    assert gen.output == "TiO.train"
    assert gen.types == {"Ti": -1626.66972707, "O": -433.23448532}
    assert gen.setups == {"Ti": "Ti.stp", "O": "O.stp"}
    assert gen.files == ["a.xsf", "sub/b.xsf"]
    assert gen.file_lines == [14, 15]


def test_writes_reference_energies_in_the_tio2_format():
    text = format_generate_in(GenerateIn(output="TiO.train", types={"Ti": -1626.66972707, "O": -433.23448532},
                                         setups={"Ti": "Ti.stp", "O": "O.stp"}, files=["x.xsf"]))
    assert re.search(r"^TYPES\n2\nTi\s+-1626\.66972707\s+\| eV\nO\s+-433\.23448532\s+\| eV$", text, re.M)
    assert text.endswith("FILES\n1\nx.xsf\n")


def test_round_trip(tmp_path):
    body = TIO2_HEAD + "TIMING\nVERBOSITY low\n\n" + files_block(["a.xsf", "b.xsf"])
    gen = read_generate_in(make(tmp_path, body))
    out = tmp_path / "data" / "copy.in"
    write_generate_in(out, gen)
    again = read_generate_in(out)
    for name in ("output", "types", "setups", "files", "options"):
        assert getattr(again, name) == getattr(gen, name), name
    assert again.options == ["TIMING", "VERBOSITY low"]
    assert format_generate_in(again) == format_generate_in(gen)


def test_files_must_be_upper_case(tmp_path):
    body = TIO2_HEAD + "files\n2\na.xsf\nb.xsf\n"
    with pytest.raises(InputError) as info:
        read_generate_in(make(tmp_path, body))
    assert info.value.line == line_of(body, "files") and "upper case" in str(info.value)
    with pytest.raises(InputError):
        read_generate_in(make(tmp_path, TIO2_HEAD + "Files\n2\na.xsf\nb.xsf\n"))


def test_other_keywords_are_case_insensitive(tmp_path):
    body = TIO2_HEAD.replace("OUTPUT", "output").replace("TYPES", "Types").replace("SETUPS", "setups") \
        + files_block(["a.xsf", "b.xsf"])
    gen = read_generate_in(make(tmp_path, body))
    assert gen.output == "TiO.train" and set(gen.types) == {"Ti", "O"} and gen.setups["O"] == "O.stp"


@pytest.mark.parametrize("after", ["\n2\n", "! two files\n2\n", "# two\n2\n"])
def test_count_must_be_on_the_very_next_line(tmp_path, after):
    body = TIO2_HEAD + "FILES" + "\n" + after + "a.xsf\nb.xsf\n"
    with pytest.raises(InputError) as info:
        read_generate_in(make(tmp_path, body))
    assert info.value.line == line_of(body, "FILES") + 1
    assert "very next line" in str(info.value) or "directly" in str(info.value)


def test_files_count_too_large(tmp_path):
    body = TIO2_HEAD + "FILES\n3\na.xsf\nb.xsf\n"
    with pytest.raises(InputError) as info:
        read_generate_in(make(tmp_path, body))
    assert info.value.line == line_of(body, "FILES") + 1
    assert "announces 3 files but lists 2" in str(info.value)


def test_files_count_too_small(tmp_path):
    body = TIO2_HEAD + "FILES\n1\na.xsf\nb.xsf\n"
    with pytest.raises(InputError) as info:
        read_generate_in(make(tmp_path, body))
    assert info.value.line == line_of(body, "b.xsf") and "more are listed" in str(info.value)


def test_missing_structure_file_is_named_with_its_line(tmp_path):
    body = TIO2_HEAD + files_block(["a.xsf", "gone.xsf", "b.xsf"])
    path = make(tmp_path, body)
    with pytest.raises(InputError) as info:
        read_generate_in(path)
    err = info.value
    assert err.path == str(path) and err.line == line_of(body, "gone.xsf")
    assert "gone.xsf" in str(err)
    assert read_generate_in(path, check_files=False).files == ["a.xsf", "gone.xsf", "b.xsf"]


def test_comments_and_blank_lines_are_ignored(tmp_path):
    body = ("! aenet input\n# another comment style\n% and a third\n\n" + TIO2_HEAD.replace("TYPES\n", "TYPES\n% n\n")
            + "FILES\n2\n! the first file\na.xsf\n\n# the second\nb.xsf\n")
    gen = read_generate_in(make(tmp_path, body))
    assert gen.files == ["a.xsf", "b.xsf"] and gen.types["Ti"] == -1626.66972707


def test_relative_paths_are_resolved_from_the_generate_in_folder(tmp_path, monkeypatch):
    path = make(tmp_path, TIO2_HEAD + files_block(["xsf/a.xsf", "../other/b.xsf"]), files=["xsf/a.xsf"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.xsf").write_text("")
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    gen = read_generate_in(path)  # would fail if the paths were taken from the working directory
    resolved = [p.resolve() for p in gen.resolved_files()]
    assert resolved == [(tmp_path / "data" / "xsf" / "a.xsf").resolve(), (tmp_path / "other" / "b.xsf").resolve()]
    assert all(p.is_file() for p in gen.resolved_files())


def test_absolute_paths_are_kept(tmp_path):
    target = tmp_path / "abs.xsf"
    target.write_text("")
    gen = read_generate_in(make(tmp_path, TIO2_HEAD + files_block([str(target)]), files=[]))
    assert gen.resolved_files() == [target]


def test_quoting_of_single_token_values():
    assert quote_token("TiO.train") == "TiO.train"
    assert quote_token("../out/TiO.train") == "'../out/TiO.train'"
    assert quote_token("my file") == "'my file'"
    assert unquote_token("'../x/Ti.stp'") == "../x/Ti.stp" and unquote_token('"a/b"') == "a/b"
    assert unquote_token("plain") == "plain"
    with pytest.raises(ValueError):
        quote_token("it's/here")


def test_no_unquoted_slash_in_any_single_token_value_written(tmp_path):
    gen = GenerateIn(output="../train/TiO.train", types={"Ti": -1.0, "O": -2.0},
                     setups={"Ti": "../stp/Ti.stp", "O": "O.stp"},
                     files=["../xsf/structure0001.xsf", "/abs/path/structure0002.xsf"],
                     options=["TIMING"])
    text = format_generate_in(gen)
    in_files = False
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("!", "#", "%")):
            continue
        if fields[0] == "FILES":
            in_files = True
            continue
        if in_files:
            continue  # FILES entries are whole lines: '/' is fine there
        for token in fields[1:]:
            if "/" in token:
                assert token[0] == token[-1] == "'", f"unquoted '/' in {line!r}"
    assert "OUTPUT  '../train/TiO.train'" in text
    assert re.search(r"^Ti\s+'../stp/Ti.stp'$", text, re.M) and re.search(r"^O\s+O.stp$", text, re.M)
    assert "\n../xsf/structure0001.xsf\n" in text  # FILES entries are not quoted
    # and it reads back to the same values
    (tmp_path / "g.in").write_text(text)
    again = read_generate_in(tmp_path / "g.in", check_files=False)
    assert again.output == gen.output and again.setups == gen.setups and again.files == gen.files


@pytest.mark.parametrize("body, words", [
    (TIO2_HEAD.replace("2\nTi", "3\nTi") + files_block(["a.xsf"]), ["TYPES"]),
    (TIO2_HEAD.replace("Ti  -1626.66972707", "Ti  abc") + files_block(["a.xsf"]), ["E_atom"]),
    (TIO2_HEAD.replace("O    -433", "8    -433") + files_block(["a.xsf"]), ["element symbol"]),
    (TIO2_HEAD + "NONSENSE 3\n" + files_block(["a.xsf"]), ["unknown keyword"]),
    (TIO2_HEAD, ["no FILES"]),
    (TIO2_HEAD.replace("O    O.stp", "Zr   Zr.stp") + files_block(["a.xsf"]), ["not in TYPES"]),
    ("OUTPUT x\n" + files_block(["a.xsf"]), ["no TYPES"]),
])
def test_other_mistakes_are_reported(tmp_path, body, words):
    with pytest.raises(InputError) as info:
        read_generate_in(make(tmp_path, body, files=["a.xsf"]))
    for word in words:
        assert word in str(info.value)
    assert str(info.value).startswith(str(tmp_path / "data" / "generate.in"))


def test_unreadable_file(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        read_generate_in(tmp_path / "nope.in")


def test_unquoted_slash_in_a_read_value_warns(tmp_path):
    body = TIO2_HEAD.replace("OUTPUT  TiO.train", "OUTPUT  ../out/TiO.train") + files_block(["a.xsf", "b.xsf"])
    with pytest.warns(UserWarning, match=r"line 1: unquoted OUTPUT value '../out/TiO.train'.*only '..'"):
        gen = read_generate_in(make(tmp_path, body))
    assert gen.output == "../out/TiO.train"
    quoted = TIO2_HEAD.replace("Ti   Ti.stp", "Ti   '../stp/Ti.stp'") + files_block(["a.xsf", "b.xsf"])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_generate_in(make(tmp_path, quoted)).setups["Ti"] == "../stp/Ti.stp"
