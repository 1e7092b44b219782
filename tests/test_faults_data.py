"""Data that hangs or crashes a command, or is silently wrong (issue 22, classes 9–12): non-regular files among
the data, geometry the neighbour list cannot take, worker counts far above the work, and duplicated
structures. Crashes and hangs are tried in CLI subprocesses with a timeout, so they fail the test rather than
the test run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faults import make_case, run_cli
from pyita.errors import PyitaError
from pyita.parallel import plan_workers, usable_cores


@pytest.fixture
def case(tmp_path) -> Path:
    """tmp_path/case/generate.in + xsf/ (six rutile cells of six atoms)."""
    return make_case(tmp_path / "case").parent


# --- class 11: worker counts --------------------------------------------------------------------------------

def test_workers_are_capped_at_the_work_and_the_cores():
    assert plan_workers(1000, 3) == min(3, usable_cores())
    assert plan_workers(1000, 10**6) == usable_cores()
    assert plan_workers(4, 0) == 1          # nothing to do: no pool worth starting
    assert plan_workers(1, 50) == 1
    with pytest.raises(PyitaError, match="--workers"):
        plan_workers(0, 3)


def test_augment_with_a_thousand_workers_starts_one_per_chunk(case):
    result = run_cli("augment", "generate.in", "--a", 1, "--delta", 0.03, "--workers", 1000, "-q",
                     "--out", "../aug", cwd=case, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads((case.parent / "aug" / "run.json").read_text())["workers"] == 1   # six parents: one chunk
