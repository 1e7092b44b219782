"""Library code for library jobs: thread limits through threadpoolctl (OpenMP and BLAS alike), and the cache folder
where the XDG base-directory rule puts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyita.paths import user_cache_dir
from pyita.train.cache import cached_features, default_cache_dir
from trainer_data import SMALL_DESCRIPTOR, emt_structures

ROOT = Path(__file__).resolve().parents[1]

THREADS = """
import json, os
import numpy, torch   # OpenBLAS (numpy's) and OpenMP (torch's) now loaded
numpy.ones((64, 64)) @ numpy.ones((64, 64))
from threadpoolctl import threadpool_info
from pyita.check.calculators import limit_threads, threads_limited

def now():
    return sorted((p["user_api"], p["filepath"], p["num_threads"]) for p in threadpool_info())

before = now()
with threads_limited(1):
    inside, env_inside = now(), os.environ["OMP_NUM_THREADS"]
after, env_after = now(), os.environ["OMP_NUM_THREADS"]
limit_threads(1)
print(json.dumps({"before": before, "inside": inside, "after": after, "final": now(), "env_inside": env_inside,
                  "env_after": env_after, "env_final": os.environ["OPENBLAS_NUM_THREADS"]}))
"""


def test_thread_limits_reach_blas_and_openmp_and_are_restored():
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2",
           "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    apis = {api for api, _, _ in out["before"]}
    assert {"blas", "openmp"} <= apis, out["before"]
    assert {n for _, _, n in out["before"]} == {2}
    assert {n for _, _, n in out["inside"]} == {1} and out["env_inside"] == "1"
    assert out["after"] == out["before"] and out["env_after"] == "2"   # the block's limits undone
    assert {n for _, _, n in out["final"]} == {1} and out["env_final"] == "1"


def test_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.delenv("PYITA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "pyita"
    assert default_cache_dir() == tmp_path / "xdg" / "pyita" / "features"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")   # invalid by the specification: ignored
    assert user_cache_dir() == Path.home() / ".cache" / "pyita"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "pyita"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PYITA_CACHE", str(tmp_path / "own"))   # PyITA's own variable wins
    assert default_cache_dir() == tmp_path / "own" / "features"


def test_features_are_cached_under_xdg_cache_home(monkeypatch, tmp_path):
    from pyita.descriptors import ChebyshevDescriptor

    monkeypatch.delenv("PYITA_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    descriptor = ChebyshevDescriptor(("Cu", "Au"), **SMALL_DESCRIPTOR)
    structures = emt_structures(2, seed=1)
    first = cached_features(descriptor, structures)
    shards = list((tmp_path / "xdg" / "pyita" / "features").rglob("*.pt"))
    assert len(shards) == 1
    again = cached_features(descriptor, structures)
    assert all((a == b).all() for a, b in zip(first, again))
    assert list((tmp_path / "xdg" / "pyita" / "features").rglob("*.pt")) == shards   # read, not rebuilt


@pytest.mark.parametrize("n", [0, -1])
def test_thread_counts_below_one_are_refused(n):
    from pyita.check.calculators import limit_threads
    from pyita.errors import PyitaError

    with pytest.raises(PyitaError, match="--threads must be ≥ 1"):
        limit_threads(n)
