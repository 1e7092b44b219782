"""The command line's conventions, as a user meets them through real processes (``python -m pyita``): choices
listed in --help and completed by the shell, -q/-v/--log-file on every command, usage errors as one line with
exit status 2, defaults shown plainly, and one-line command descriptions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from pyita.choices import (AENET_DESCRIPTORS, AENET_METHODS, BACKENDS, ENERGY_NORMALIZATIONS, FORCE_FRACTION_OF,
                           ENSEMBLES, FORMATS, METHODS, PRESETS, STRATEGIES, WEIGHT_INITS)

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["augment"], ["check"], ["label"], ["predict"], ["md"], ["train"], ["experiment"], ["aenet", "prepare"],
            ["aenet", "run"], ["aenet", "export"]]
#: The choices each command's --help must list, as typer shows them (a|b|c), from their one home.
CHOICES = {
    "train": [METHODS, FORCE_FRACTION_OF, ENERGY_NORMALIZATIONS, WEIGHT_INITS, STRATEGIES],
    "augment": [STRATEGIES, FORMATS],
    "experiment": [PRESETS, BACKENDS],
    "aenet prepare": [AENET_DESCRIPTORS, AENET_METHODS],
    "md": [ENSEMBLES],
}


def pyita(*args, cwd: Path = ROOT, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pyita", *map(str, args)], cwd=cwd, env=environment,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """Every command's --help text, with the panel borders taken out."""
    found = {}
    for command in COMMANDS:
        result = pyita(*command, "--help")
        assert result.returncode == 0, result.stderr
        found[" ".join(command)] = re.sub(r"[│╭╮╰╯─]", " ", result.stdout)
    return found


def test_every_choice_is_listed_in_help(helps):
    for command, choices in CHOICES.items():
        for values in choices:
            assert f"<{'|'.join(values)}>" in helps[command], (command, values)


def test_every_command_takes_quiet_verbose_and_a_log_file(helps):
    for command, text in helps.items():
        for option in (r"--quiet\s+-q", r"--verbose\s+-v", r"--log-file\s+PATH"):
            assert re.search(option, text), (command, option)


def test_defaults_show_plainly(helps):
    flat = " ".join(helps["train"].split())
    assert "Default: 15:tanh,15:tanh (with --initial-networks: theirs)." in flat
    assert "(15:tanh,15:tanh)" not in flat and "[default: lbfgs]" in flat
    augment = " ".join(helps["augment"].split())
    for option in ("--a", "--delta"):   # no default: required, but asked for at a terminal
        row = augment[augment.index(f" {option} "):]
        assert "Required; asked for when run at a terminal." in row[:250], row[:250]
    assert "[default: 15:tanh,15:tanh]" in " ".join(helps["aenet prepare"].split())


def test_option_help_reads_as_sentences(helps):
    """Every option's help starts as a sentence does: with a capital (or a quoted name)."""
    for command, text in helps.items():
        rows = re.findall(r"^\s*(--[\w-]+).*?<[^>]+>\s{2,}(\S.*?)$", text, flags=re.MULTILINE)
        assert rows, command
        for option, first_line in rows:
            assert first_line[0].isupper() or first_line[0] in "'`$", (command, option, first_line)


def test_command_descriptions_are_one_line_each():
    result = pyita("--help")
    panel = result.stdout[result.stdout.index("Commands"):]
    rows = [re.sub(r"[│╭╮╰╯─]", "", line).strip() for line in panel.splitlines()[1:]]
    rows = [row for row in rows if row]
    names = ["augment", "check", "label", "predict", "md", "train", "experiment", "recommend", "aenet"]
    assert [row.split()[0] for row in rows] == names, rows   # no continuation lines at 250 columns
    assert all(row.endswith(".") for row in rows), rows
    aenet = pyita("aenet", "--help").stdout
    export = next(line for line in aenet.splitlines() if " export " in line)
    assert export.rstrip(" │").endswith("for predict.x, LAMMPS or ASE."), export


def test_usage_error_is_one_line_with_exit_2():
    result = pyita("train", "sample:tio2-md", "--iteration", "3")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: pyita train: No such option: --iteration (Possible options: --force-fraction, "
                     "--iterations, --test-fraction); see pyita train --help"], result.stderr
    bad = pyita("augment", "sample", "--a", "1", "--delta", "0.02", "--format", "cif")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert ("error: pyita augment: Invalid value for '--format': 'cif' is not one of 'xsf', 'extxyz'; see pyita "
            "augment --help") == bad.stderr.strip()


def test_unknown_preset_names_itself():
    result = pyita("experiment", "--preset", "quik")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "'--preset': 'quik' is not one of " + ", ".join(f"'{p}'" for p in PRESETS) in result.stderr
    assert "<input>" not in result.stderr
    from pyita.errors import PyitaError
    from pyita.experiment import run_experiment

    with pytest.raises(PyitaError) as error:   # the Python API, which no typer stands before
        run_experiment(None, "quik", {}, ROOT / "never-written")
    assert str(error.value) == f"unknown preset 'quik'; choose one of {', '.join(PRESETS)}"
    with pytest.raises(PyitaError) as error:
        run_experiment(None, None, {}, ROOT / "never-written")
    assert str(error.value) == "give either a config file or --preset"   # no "<input>:" before it
    assert not (ROOT / "never-written").exists()


def test_shell_completion_script_and_choices():
    # the script `pyita --show-completion` prints, for bash named (its own detection depends on the parent process)
    script = pyita(env={"_PYITA_COMPLETE": "source_bash"})
    assert script.returncode == 0 and "_PYITA_COMPLETE=complete_bash" in script.stdout, script.stdout
    completing = {"_PYITA_COMPLETE": "complete_bash", "COMP_CWORD": "4"}
    methods = pyita(env={**completing, "COMP_WORDS": "pyita train data --method "})
    assert methods.stdout.split() == list(METHODS)
    devices = pyita(env={**completing, "COMP_WORDS": "pyita predict m.pt --device c"})
    assert devices.stdout.split() == ["cpu", "cuda"]
    presets = pyita(env={**completing, "COMP_CWORD": "3", "COMP_WORDS": "pyita experiment --preset seed"})
    assert presets.stdout.split() == [p for p in PRESETS if p.startswith("seed")]


def test_quiet_verbose_and_log_file_on_train_and_aenet_export(tmp_path):
    """aenet export was the one command without -q; both now take -q, -v and --log-file, for real."""
    log = tmp_path / "run.log"
    env = {"PYITA_CACHE": str(tmp_path / "cache")}
    train = pyita("train", "sample:tio2-md", "--iterations", 2, "--hidden", "2:tanh", "--out", "m.pt", "-q", "-v",
                  "--log-file", log, cwd=tmp_path, env=env)
    assert train.returncode == 0, train.stderr
    assert train.stderr == ""   # -q: no progress, and nothing went wrong
    exported = pyita("aenet", "export", "m.pt", "--out", "nn", "-q", "-v", "--log-file", log, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert sorted(p.name for p in (tmp_path / "nn").glob("*.nn")) == ["O.2t.nn", "Ti.2t.nn"]
    text = log.read_text()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d "
    assert re.search(stamp + r"pyita train sample:tio2-md --iterations 2 .*--log-file " + re.escape(str(log)), text)
    assert re.search(stamp + r"train: 2/2 epochs, .*/s, done in \d+s — MAE/RMSE meV/atom: train ", text), text
    assert re.search(stamp + r"trained on \d+ structures \(0 derived\)", text), text
    assert re.search(stamp + r"pyita aenet export m.pt --out nn -q -v --log-file", text), text
    assert re.search(stamp + r"O.2t.nn, Ti.2t.nn → nn", text) or re.search(stamp + r"Ti.2t.nn, O.2t.nn → nn", text)
    failed = pyita("aenet", "export", "missing.pt", "--out", "nn2", "--log-file", log, cwd=tmp_path)
    assert failed.returncode == 2
    assert re.search(stamp + r"error: .*missing.pt", log.read_text()), log.read_text()   # errors reach the log


def test_log_file_in_a_missing_folder_is_a_usage_error(tmp_path):
    result = pyita("aenet", "export", "m.pt", "--out", "nn", "--log-file", tmp_path / "no" / "run.log",
                   cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "--log-file" in result.stderr and "cannot append to" in result.stderr and "No such file" in result.stderr
    assert not (tmp_path / "no").exists() and not (tmp_path / "nn").exists()


def test_choice_names_have_one_home():
    """The modules that implement a choice key it by the names in pyita.choices, and validate against them."""
    from pyita.io.aenet_inputs import METHOD_PARAMS
    from pyita.model.network import WEIGHT_BOUNDS

    assert tuple(WEIGHT_BOUNDS) == WEIGHT_INITS
    assert set(METHOD_PARAMS) == set(AENET_METHODS)
    folder = resources.files("pyita") / "experiment" / "presets"
    assert sorted(PRESETS) == sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
    assert PRESETS[0] == "quick"
    from pyita.augment import STRATEGIES as exported
    from pyita.backends import BACKENDS as backends

    assert exported is STRATEGIES and backends is BACKENDS
