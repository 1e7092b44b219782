"""Regenerate the golden outputs (run from the project root: ``python tests/data/golden/make_golden.py``).

The golden files pin what PyITA writes, so that a refactor can prove it changed nothing: the checksums of
every file `pyita augment` and `pyita aenet prepare` write for the bundled sample, and the saved task results
of a tiny experiment whose report tables tests/test_golden.py rebuilds. Regenerate only for an intended
change of output, and say so in the commit.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from test_golden import (EXPERIMENT, GOLDEN_RUNS, experiment_config, run_golden,  # noqa: E402
                         tables_of)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        for name in GOLDEN_RUNS:
            digest = run_golden(name, Path(scratch) / name)
            (HERE / f"{name}.json").write_text(json.dumps(digest, indent=1, sort_keys=True) + "\n")
        from pyita.experiment.tasks import run_trials

        config, _ = experiment_config()
        out = Path(scratch) / "experiment"
        out.mkdir()
        assert not run_trials(config, out, progress_enabled=False).missing
        target = HERE / "experiment"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out / "results", target / "results")
        (target / "config.toml").write_text(EXPERIMENT)
        (target / "tables.json").write_text(json.dumps(tables_of(config, out), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
