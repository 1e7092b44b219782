"""The one CSV writer: every table PyITA writes whole (predictions, error tables, training histories, experiment
reports, check's errors, aenet run folders' structure lists) goes through ``write_csv``, so they share their
layout, number format and all-or-nothing writing. The one table written row by row, ``pyita augment``'s manifest
(millions of rows, streamed beside the structures), keeps the same layout with the csv module's writer."""

from __future__ import annotations

import csv
import gzip
import math
import numbers
from pathlib import Path
from collections.abc import Iterable, Sequence

from pyita.io.atomic import atomic_write


def _cell(value):
    """A number as Python writes it (shortest repr that reads back exactly); NaN and ±inf as an empty cell:
    a value that is not a number is no result, and a reader should not take "nan" for one."""
    if isinstance(value, numbers.Real) and not math.isfinite(value):
        return ""
    return value


def write_csv(path: str | Path, rows: Iterable[dict], columns: Sequence[str] | None = None) -> None:
    """Write ``rows`` (dicts) to ``path`` atomically, gzip-compressed when it ends in ``.gz``. ``columns``
    default to every key in order of first appearance; a row without a column leaves its cell empty. With no
    rows and no columns nothing is written."""
    rows = list(rows)
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    if not columns:
        return
    opener = gzip.open if str(path).endswith(".gz") else open

    def write(tmp: str) -> None:
        with opener(tmp, "wt", newline="") as handle:
            writer = csv.DictWriter(handle, columns, restval="")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)

    atomic_write(path, write)
