"""The results of a finished aenet run: predict.x's energies and forces against the reference structures as the
same error tables the embedded trainer produces, train.x's history, and results.json."""

from __future__ import annotations

import csv
from pathlib import Path
from collections.abc import Sequence

from pyita.backends.aenet.folder import read_record
from pyita.backends.aenet.settings import LOGS, STRUCTURES_CSV
from pyita.errors import PyitaError
from pyita.io.aenet_outputs import read_energies_file, read_predict_output, read_train_output
from pyita.io.atomic import atomic_write_text
from pyita.io.records import json_text
from pyita.io.tables import write_csv
from pyita.io.xsf import read_xsf
from pyita.metrics import ENERGY_COLUMNS, FORCE_COLUMNS, error_tables


def error_rows(predictions: Sequence[dict], references, reference_energies: dict[str, float] | None = None,
               sources: dict[str, str] | None = None) -> tuple[list[dict], list[dict], dict]:
    """predict.x's results against the reference structures as ``pyita.metrics.error_tables`` (the tables
    `pyita predict` writes): (energy rows, force rows, summary).

    ``references``: a dict keyed by the predict.in file names, or a sequence aligned with ``predictions``.
    predict.x's total energy is compared with the reference's (a cohesive reference plus ``reference_energies``,
    the run's TYPES); ``sources`` name the structures by file (default: the reference's own source).
    """
    if isinstance(references, dict):
        refs = []
        for p in predictions:
            if p["file"] not in references:
                raise PyitaError(f"predict.x result for {p['file']!r} has no reference structure")
            refs.append(references[p["file"]])
    else:
        refs = list(references)
        if len(refs) != len(predictions):
            raise PyitaError(f"{len(predictions)} predictions but {len(refs)} reference structures")
    for p, ref in zip(predictions, refs):
        n = len(ref)
        if p["n_atoms"] != n or (p["symbols"] and list(p["symbols"]) != list(ref.symbols)):
            raise PyitaError(f"{p['file']}: predict.x reports {p['n_atoms']} atoms ({''.join(p['symbols'][:6])}…) "
                             f"but the reference has {n} ({''.join(ref.symbols[:6])}…)")
    return error_tables(refs, [float(p["total_energy"]) for p in predictions], [p["forces"] for p in predictions],
                        reference_energies or {},
                        [(sources or {}).get(p["file"], ref.source or "") for p, ref in zip(predictions, refs)])


def _predict_files(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    for k, line in enumerate(lines):
        if line.split()[:1] == ["FILES"]:
            count = int(lines[k + 1].split()[0])
            files = [f.strip() for f in lines[k + 2:] if f.strip() and f.strip()[0] not in "!#%"]
            return files[:count]
    raise PyitaError(f"{path} has no FILES section")


def collect_results(rundir: str | Path, write: bool = True) -> dict:
    """Parse train.out, energies.train.0 and predict.out of a finished run (also one made with run.sh) into
    error tables; writes errors-energy.csv, errors-force.csv and results.json unless ``write`` is False."""
    rundir = Path(rundir)
    record = read_record(rundir)
    for name in (LOGS["train"], LOGS["predict"]):
        if not (rundir / name).is_file():
            raise PyitaError(f"{rundir / name} missing: run aenet first (`pyita aenet run {rundir}`)")
    train = read_train_output(rundir / LOGS["train"])
    predictions = read_predict_output(rundir / LOGS["predict"])
    files = _predict_files(rundir / "predict.in")
    references = {f: read_xsf(rundir / f) for f in files}
    sources = {}
    if (rundir / STRUCTURES_CSV).is_file():
        with open(rundir / STRUCTURES_CSV, newline="") as handle:
            sources = {row["file"]: row["source"] for row in csv.DictReader(handle)}
    energy_rows, force_rows, errors = error_rows(predictions, references, record.get("reference_energies"), sources)
    # Per epoch in meV/atom, with the experiment runner's key names. With TESTPERCENT 0 aenet has no test set
    # (it prints MAE 0 and RMSE NaN for it), so the test keys are left out rather than reported as 0.
    with_test = bool(train["n_test"])
    history = []
    for e in train["epochs"]:
        row = {"epoch": e["epoch"], "train_energy_mae": 1000 * e["MAE_train"],
               "train_energy_rmse": 1000 * e["RMSE_train"]}
        if with_test:
            row.update(test_energy_mae=1000 * e["MAE_test"], test_energy_rmse=1000 * e["RMSE_test"])
        history.append(row)
    energies_train = (read_energies_file(rundir / "energies.train.0")
                      if (rundir / "energies.train.0").is_file() else [])
    summary = {
        "test_set": record.get("test_set"),
        **errors,
        "train_final": ({k: v for k, v in train["final"].items() if with_test or "_test_" not in k}
                        if train["final"] else None),
        "epochs": len(train["epochs"]) - 1 if train["epochs"] else 0,
        "n_train": train["n_train"], "n_train_energies": len(energies_train),
    }
    if write:
        write_csv(rundir / "errors-energy.csv", energy_rows, ENERGY_COLUMNS)
        write_csv(rundir / "errors-force.csv", force_rows, FORCE_COLUMNS)
        atomic_write_text(rundir / "results.json", json_text(summary, indent=2))
    return {"energy_errors": energy_rows, "force_errors": force_rows, "history": history,
            "summary": summary, "train_energies": energies_train}

