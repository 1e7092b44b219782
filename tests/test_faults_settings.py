"""Settings no run can use are refused before anything is read or written: one line, exit status 2, from the
one home the CLI and the Python API share (issue 22: silently accepted values and tracebacks)."""

from __future__ import annotations

import pytest

from pyita.errors import SettingError
from pyita.architecture import parse_hidden
from pyita.model.load import resolve_device
from pyita.predict import predict
from pyita.reference import parse_types
from pyita.train.settings import TrainSettings

from faults import error_line, make_case, run_cli, tree_hashes

CASES = [
    (["train", "DATA", "--hidden", "5:tanh,,5:tanh"], "empty entry between commas"),
    (["aenet", "prepare", "DATA", "--hidden", "5:tanh,"], "empty entry between commas"),
    (["train", "DATA", "--types", "Ti=1,Ti=2"], "gives Ti twice"),
    (["train", "DATA", "--batch-size", "-5"], "batch size must be a whole number ≥ 1, got -5"),
    (["train", "DATA", "--checkpoint-every", "-1"], "checkpoint_every must be ≥ 0"),
    (["train", "DATA", "--device", "tpu"], "unknown device 'tpu'"),
    (["train", "DATA", "--seed", "-1"], "seed must be a whole number ≥ 0, got -1"),
    (["aenet", "prepare", "DATA", "--seed", "-1"], "seed must be a whole number ≥ 0, got -1"),
    (["predict", "MODEL", "DATA", "--batch-size", "0"], "batch size must be a whole number ≥ 1, got 0"),
    (["predict", "MODEL", "DATA", "--device", "tpu"], "unknown device 'tpu'"),
]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    generate_in = make_case(root / "case")
    (root / "model.pt").write_bytes(b"not read: the settings are refused first")
    return root, generate_in


@pytest.mark.parametrize("args,message", CASES,
                         ids=[" ".join(x for x in a if x not in ("DATA", "MODEL")) for a, _ in CASES])
def test_setting_refused_with_one_line_and_nothing_written(case, args, message):
    root, generate_in = case
    args = [str(generate_in) if a == "DATA" else str(root / "model.pt") if a == "MODEL" else a for a in args]
    before = tree_hashes(root)
    error_line(run_cli(*args, "--out", "out", "-q", cwd=root), message)
    assert tree_hashes(root) == before


def test_python_api_refuses_the_same_settings():
    with pytest.raises(SettingError, match="empty entry"):
        parse_hidden("5:tanh,,5:tanh")
    assert parse_hidden("5:tanh, 5:tanh") == parse_hidden("5:tanh 5:tanh") == [(5, "tanh"), (5, "tanh")]
    with pytest.raises(SettingError, match="twice"):
        parse_types("Ti=1 Ti=2")
    for bad in ({"batch_size": -5}, {"batch_size": 2.5}, {"seed": -1}, {"init_seed": -3}, {"seed": True},
                {"checkpoint_every": -1}, {"checkpoint_every": float("nan")}, {"hidden": "5:tanh,,5:tanh"}):
        with pytest.raises(SettingError):
            TrainSettings.from_flat(**bad)
    with pytest.raises(SettingError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(SettingError, match="batch size"):
        predict("never-read.pt", [], batch_size=0)
