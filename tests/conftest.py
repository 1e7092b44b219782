"""Shared fixtures: the real TiO2 data from ../shared (skipped cleanly when absent)."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

# Before torch loads: spinning OpenMP waits slow torch 10–20× when the other core is busy (2-core CI).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if os.environ.get("PYTEST_XDIST_WORKER"):   # parallel test workers (pytest -n 2): one thread each, not 2 × 2 cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
TIO2 = ROOT.parent / "shared" / "data" / "tio2"
TIO2_ARCHIVE = TIO2 / "tio2-xsf-full.tar.gz"
#: The real aenet 2.0.4 (static builds) beside the project: the tests that need aenet run whenever it is there
#: (AENET_BIN, when set, names another installation) and skip cleanly where it is not.
AENET = ROOT.parent / "shared" / "tools" / "aenet-2.0.4" / "bin"
if AENET.is_dir():
    os.environ.setdefault("AENET_BIN", str(AENET))


def _extract_tio2(cache: Path) -> Path:
    """Unpack the archive once into a cache outside the project (never into the repository). Test workers run in
    parallel (pytest-xdist), so each unpacks into its own temporary folder and the first rename wins."""
    target = cache / "tio2"
    if not (target / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="tio2-", dir=cache))
        try:
            with tarfile.open(TIO2_ARCHIVE) as tar:
                tar.extractall(scratch, filter="data")
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        (scratch / ".complete").touch()
        try:
            scratch.rename(target)
        except OSError:                # another worker won, or a half-unpacked folder of an interrupted run is there
            if not (target / ".complete").exists():
                return scratch / "xsf"
            shutil.rmtree(scratch, ignore_errors=True)
    return target / "xsf"


@pytest.fixture(scope="session")
def tio2_xsf_dir() -> Path:
    """Folder holding structure0001.xsf … structure7815.xsf."""
    if not TIO2_ARCHIVE.exists():
        pytest.skip("real TiO2 data not present in ../shared/data/tio2")
    cache = Path(os.environ.get("PYITA_TEST_CACHE", Path.home() / ".cache" / "pyita-tests"))
    return _extract_tio2(cache)


@pytest.fixture(scope="session")
def tio2_subset_1000(tio2_xsf_dir) -> list[Path]:
    names = (TIO2 / "subset-1000.txt").read_text().split()
    return [tio2_xsf_dir / Path(n).name for n in names]
