"""The JSON records PyITA writes beside its outputs (run.json, results.json, check.json…)."""

from __future__ import annotations

import math


def jsonable(value):
    """``value`` with non-finite floats as ``null``: strict JSON, which ``json.dumps`` alone does not write."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
