"""The one CSV writer (pyita.io.tables.write_csv): layout, number format, non-finite numbers, gzip."""

from __future__ import annotations

import csv
import gzip
import math

import numpy as np

from pyita.io.tables import write_csv


def test_numbers_read_back_exactly_and_non_finite_ones_are_left_empty(tmp_path):
    rows = [{"a": 0.1 + 0.2, "b": np.float64(1 / 3), "c": 3, "d": True},
            {"a": math.nan, "b": math.inf, "e": "x"}]
    write_csv(tmp_path / "t.csv", rows)
    text = (tmp_path / "t.csv").read_text()
    assert text.splitlines()[0] == "a,b,c,d,e"    # every column, in order of first appearance
    back = list(csv.DictReader(text.splitlines()))
    assert float(back[0]["a"]) == 0.1 + 0.2 and float(back[0]["b"]) == 1 / 3 and back[0]["d"] == "True"
    assert back[1] == {"a": "", "b": "", "c": "", "d": "", "e": "x"}
    assert "nan" not in text and "inf" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]   # nothing left beside it


def test_given_columns_a_gzip_file_and_nothing_to_write(tmp_path):
    write_csv(tmp_path / "h.csv", [], ["x", "y"])
    assert (tmp_path / "h.csv").read_bytes() == b"x,y\r\n"
    write_csv(tmp_path / "t.csv.gz", [{"x": 1.5}])
    with gzip.open(tmp_path / "t.csv.gz", "rt", newline="") as handle:
        assert handle.read() == "x\r\n1.5\r\n"
    write_csv(tmp_path / "none.csv", [])
    assert not (tmp_path / "none.csv").exists()
