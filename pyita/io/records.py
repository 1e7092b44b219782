"""The JSON records PyITA writes beside its outputs (run.json, results.json, check.json…)."""

from __future__ import annotations

import json
import math

import numpy as np


def jsonable(value):
    """``value`` with non-finite floats as ``null`` (numpy scalars and arrays as Python numbers and lists): strict
    JSON, which ``json.dumps`` alone does not write (it writes a bare NaN, which JSON readers refuse)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def json_text(value, indent: int | None = None, **options) -> str:
    """The text of a JSON file (or line) holding ``value``, ending in a newline: ``null`` for NaN and ±inf,
    never a bare NaN. ``options`` are json.dumps's (``default=str``, ``ensure_ascii``…)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False, **options) + "\n"
