"""Issue 22, classes 7, 8 and 16: an experiment's every setting is checked before its output folder exists
(one line naming the key, what it allows and the value as given; exit 2; no folder), whatever shape the TOML
has; damaged archives and names with line breaks are one line; anything unforeseen is one line to report."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faults import error_line, rutile, run_cli
from pyita.errors import PyitaError
from pyita.experiment.runner import prepare_experiment
from pyita.io.xsf_write import format_xsf

GOOD = '[experiment]\ndata = "sample:tio2-md"\ntrials = 1\n\n[trainer]\niterations = 1\nhidden = "2:tanh"\n'


def _refused(tmp_path: Path, text: str | bytes, *words: str, options=()) -> str:
    """Run `pyita experiment` on a config; assert exit 2, one error line holding ``words``, no output."""
    config = tmp_path / "exp.toml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    done = run_cli("experiment", config, "--out", tmp_path / "out", "-q", *options, cwd=tmp_path)
    line = error_line(done, *words)
    assert not (tmp_path / "out").exists()
    return line


#: (config text, words of the error line, run as a real `pyita experiment` subprocess (else in-process through
#: ``prepare_experiment``, the call the CLI makes before it creates the folder)).
BAD_CONFIGS = [
    # a string for an integer: a traceback before; now the value as given and its type
    (GOOD.replace("trials = 1", 'trials = "2"'), ['[experiment] trials must be an integer ≥ 1', 'got "2" (a string)'],
     True),
    # bools are ints in Python: true was taken for 1 trial
    (GOOD.replace("trials = 1", "trials = true"), ["trials must be an integer", "got true (a boolean)"], False),
    # these failed only after the folder was made
    (GOOD.replace("iterations = 1", 'iterations = "3"'), ['[trainer] iterations', 'got "3" (a string)'], False),
    (GOOD.replace("iterations = 1", "iterations = 0"), ["[trainer] iterations must be an integer ≥ 1", "got 0"], True),
    (GOOD + 'method = "sgd"\n', ["[trainer]", "'sgd'", "lbfgs or adam"], False),
    (GOOD.replace('"2:tanh"', '"5:relu"'), ["[trainer]", "'5:relu'", "tanh, sigmoid"], False),
    (GOOD.replace("sample:tio2-md", "sample:tio2-mdd"), ["unknown sample set 'tio2-mdd'", "tio2-md"], True),
    (GOOD + "colour = 1\n", ["unknown [trainer] key 'colour'; allowed: method, iterations"], False),
    # tables of the wrong shape: tracebacks before
    ("condition = 3\n" + GOOD, ["condition must be an array of tables", "got 3 (an integer)"], True),
    (GOOD.replace("[trainer]", "[[trainer]]"), ["[trainer] must be a table", "(an array)"], False),
    (GOOD + '\n[[condition]]\nname = "x"\naugment = "x"\n', ["condition 'x': augment must be a table",
                                                            'got "x" (a string)'], False),
    (GOOD + '\n[[condition]]\nname = "x"\ntrainer = { method = "lm" }\n', ["condition 'x'", "'lm'"], False),
    (GOOD + '\n[[condition]]\nname = "x"\naugment = { a = [2, "4"] }\n', ["condition 'x': augment.a must be"],
     False),
]


@pytest.mark.parametrize("text, words, cli", BAD_CONFIGS)
def test_bad_settings_are_refused_before_the_folder_exists(tmp_path, monkeypatch, text, words, cli):
    if cli:
        _refused(tmp_path, text, *words)
        return
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.toml").write_text(text)
    with pytest.raises(PyitaError) as refused:
        prepare_experiment(tmp_path / "exp.toml", None)
    assert all(word in str(refused.value) for word in words) and "\n" not in str(refused.value), refused.value
    assert [p.name for p in tmp_path.iterdir()] == ["exp.toml"]


def test_an_option_is_named_as_an_option(tmp_path):
    _refused(tmp_path, GOOD, "--trials must be an integer ≥ 1; got 0 (an integer)", options=["--trials", "0"])


def test_a_scheduler_without_dask_is_refused_before_the_folder_exists(tmp_path):
    """dask is installed here: hide it, as on a machine without the extra."""
    hide = tmp_path / "no-dask" / "distributed"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('dask.distributed is hidden by the test')\n")
    import os

    config = tmp_path / "exp.toml"
    config.write_text(GOOD)
    done = run_cli("experiment", config, "--out", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:1", "-q",
                   cwd=tmp_path, PYTHONPATH=os.pathsep.join([str(hide.parent), os.environ.get("PYTHONPATH", "")]))
    error_line(done, "dask.distributed is not installed")
    assert not (tmp_path / "out").exists()


def test_a_byte_order_mark_is_read_and_other_encodings_are_one_line(tmp_path):
    config = tmp_path / "exp.toml"
    config.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert prepare_experiment(config, None, for_run=False).config.trials == 1
    config.write_bytes(GOOD.replace("trials = 1", 'name = "caf\xe9"').encode("latin-1"))
    with pytest.raises(PyitaError, match="not UTF-8 text.*0xe9"):
        prepare_experiment(config, None)


def test_subset_size_beyond_the_data_is_reported_as_used(tmp_path):
    """The trials clamp subset_size to the usable structures; the report says what was used, and warns."""
    from pyita.experiment.config import parse_config, parse_toml
    from pyita.experiment.report import write_report
    from test_golden import EXPERIMENT, GOLDEN

    raw = parse_toml(EXPERIMENT.replace("subset_size = 24", "subset_size = 5000"), "golden.toml")
    config = parse_config(raw, "golden.toml")
    shutil.copytree(GOLDEN / "experiment" / "results", tmp_path / "results")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_report(config, tmp_path)
    assert any("subset_size 5000 is more than the 24 usable structures" in str(w.message) for w in caught)
    assert "subset 24 (all usable structures; subset_size 5000 asked" in (tmp_path / "report.md").read_text()


def _archive(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _xsf(k: int) -> bytes:
    return format_xsf(rutile(k)).encode()


@pytest.mark.parametrize("make, words, cli", [
    (lambda p: p.write_bytes(b""), ["cannot read archive: the file is empty"], False),
    (lambda p: p.write_bytes(b"not a tar archive " * 40), ["not a tar archive"], False),
    # "Aborted." and exit 1 before: an EOFError that click took for the end of input
    (lambda p: p.write_bytes(_archive(p, [(f"s{k}.xsf", _xsf(k)) for k in range(6)]).read_bytes()[:900]),
     ["cannot read archive: it ends early"], True),
    (lambda p: _archive(p, [("s0.xsf", _xsf(0)), ("s1.xsf", _xsf(1).replace(b"PRIMCOORD", b"PRIMCOORD \xe9"))]),
     ["data.tar.gz:s1.xsf: cannot read", "0xe9"], False),
    (lambda p: _archive(p, [("s0.xsf", _xsf(0)), ("odd\nname.xsf", _xsf(1))]),
     ["data.tar.gz:odd\\nname.xsf: a line break in this name"], True),
])
def test_damaged_archives_are_one_line(tmp_path, monkeypatch, make, words, cli):
    make(tmp_path / "data.tar.gz")
    if cli:
        done = run_cli("augment", "data.tar.gz", "--a", "1", "--delta", "0.01", "--out", "out", "-q", cwd=tmp_path)
        error_line(done, *words)
        assert not (tmp_path / "out").exists()
        return
    from pyita.io import read_structures

    monkeypatch.chdir(tmp_path)
    with pytest.raises(PyitaError) as refused:
        read_structures("data.tar.gz")
    assert all(word in str(refused.value) for word in words) and "\n" not in str(refused.value), refused.value


def test_a_folder_name_with_a_line_break_is_one_line(tmp_path):
    from pyita.io import open_source

    folder = tmp_path / "two\nlines"
    folder.mkdir()
    (folder / "s0.xsf").write_bytes(_xsf(0))
    with pytest.raises(PyitaError, match="a line break in this name"):
        open_source(folder)


def test_an_unforeseen_error_is_one_line_to_report(monkeypatch, capsys):
    import pyita.cli.entry as cli

    def broken(**options):   # main() runs the application with options (standalone_mode, prog_name)
        raise RuntimeError("something PyITA did not foresee")

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.delenv("PYITA_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unexpected RuntimeError: something PyITA did not "
                                                   "foresee") and "please report" in lines[0], err


# --- property: configs of any shape and type are accepted or refused in one line, never half-started -------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x7f"), max_size=8)
_SCALARS = st.one_of(st.booleans(), st.integers(-3, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                     _TEXT, st.sampled_from(["sample:tio2-md", "lbfgs", "adam", "15:tanh", "aenet", "embedded",
                                             "balanced", "sample:nope", "5:relu", "2:tanh"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(_TEXT, inner, max_size=3)),
                       max_leaves=6)
#: Keys of each table with values that are often right, so that accepted configs come up too.
_PLAUSIBLE = {
    "experiment": {"trials": st.integers(0, 3), "seed": st.integers(-1, 9), "subset_size": st.integers(2, 9),
                   "test_fraction": st.floats(-0.5, 1.5), "workers": st.integers(0, 3), "name": _TEXT,
                   "backend": st.sampled_from(["embedded", "aenet", "gpaw"]), "max_energy": st.floats(),
                   "reference_energies": st.dictionaries(st.sampled_from(["Ti", "O", "Xx"]), st.floats(), max_size=2),
                   "colour": _SCALARS},
    "trainer": {"method": st.sampled_from(["lbfgs", "adam", "sgd", "bfgs"]), "iterations": st.integers(-1, 3),
                "hidden": st.sampled_from(["2:tanh", "5:relu", "", "2:tanh,,2:tanh"]),
                "force_weight": st.floats(-1, 1), "force_fraction": st.floats(-1, 2), "batch_size": st.integers(-1, 9),
                "patience": st.integers(-1, 3), "early_stopping": st.integers(-1, 3), "on_the_fly": st.booleans(),
                "validation_fraction": st.floats(-1, 2), "descriptor": st.dictionaries(
                    st.sampled_from(["radial_rc", "radial_n", "foo"]), _SCALARS, max_size=2),
                "seed": st.integers(0, 3), "keep_runs": st.booleans(), "method_params": _VALUES,
                "weight_init": st.sampled_from(["aenet", "pytorch", "x"]), "max_minutes": st.floats(-1, 9),
                "nonsense": _SCALARS},
    "augment": {"strategy": st.sampled_from(["sequential", "balanced", "random-all", "x"]),
                "a": st.one_of(st.floats(-1, 6), st.lists(st.floats(-1, 6), max_size=2)),
                "delta": st.one_of(st.floats(-0.1, 2), st.lists(st.floats(0, 0.2), max_size=2)),
                "on_the_fly": st.booleans(), "weight": st.floats(-1, 2), "max_force": st.floats(-1, 9),
                "parent_child_weight": st.floats(-1, 9), "dlta": _SCALARS},
}


def _table(kind: str, required: dict | None = None):
    plausible = st.dictionaries(st.sampled_from(sorted(_PLAUSIBLE[kind])), st.none(), max_size=3).flatmap(
        lambda keys: st.fixed_dictionaries({k: _PLAUSIBLE[kind][k] for k in keys}))
    anything = st.dictionaries(st.one_of(st.sampled_from(sorted(_PLAUSIBLE[kind])), _TEXT), _VALUES, max_size=3)
    return st.one_of(plausible, plausible, plausible, anything, _VALUES).map(
        lambda d: {**required, **d} if required and isinstance(d, dict) else d)


_CONDITION = st.one_of(*[st.fixed_dictionaries(
    {"name": st.one_of(_TEXT, _TEXT, _SCALARS)},
    optional={"augment": _table("augment"), "trainer": _table("trainer"),
              "init_seed_offset": st.one_of(st.integers(-1, 3), _SCALARS),
              "backend": st.sampled_from(["embedded", "aenet", "lammps", 1])})] * 4, _VALUES)
_CONFIGS = st.fixed_dictionaries(
    {}, optional={"experiment": _table("experiment", {"data": "sample:tio2-md"}), "trainer": _table("trainer"),
                  "condition": st.one_of(st.lists(_CONDITION, max_size=3), st.lists(_CONDITION, max_size=3),
                                         _VALUES),
                  "extra": _VALUES})
_TRIALS = st.one_of(st.none(), st.none(), st.none(), st.integers(-2, 3))


def _toml(value) -> str:
    """A TOML inline value (json's spelling, which TOML shares for these, besides bools, nan and inf)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and abs(value) == float("inf"):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(value, ensure_ascii=False)


def _document(raw: dict) -> str:
    return "".join(f"{json.dumps(key, ensure_ascii=False)} = {_toml(value)}\n" for key, value in raw.items())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=_CONFIGS, trials=_TRIALS)
def test_any_config_is_accepted_or_refused_in_one_line(raw, trials, tmp_path, monkeypatch):
    """The checks `pyita experiment` makes before claiming its folder (``prepare_experiment``, the CLI's own
    call), on configs of random shape and type, written as TOML: accepted, or one PyitaError line; and
    nothing written."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "exp.toml"
    config.write_text(_document(raw))
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_experiment(config, None, {"trials": trials})
    except PyitaError as exc:
        assert "\n" not in str(exc), str(exc)
    else:
        assert prepared.config.trials >= 1 and prepared.config.conditions[0].is_baseline
    assert sorted(p.name for p in tmp_path.iterdir()) == before
