"""Accuracy on the full TiO2 set within a time budget: energy-only, direct force training (all structures and a
10 % force fraction) and the parent–child loss, each one `pyita train` run of the same split.

    python benchmarks/full_set.py [--minutes 60] [--rows energy,forces,forces-f0.1,parent-child]
                                  [--hidden 15:tanh,15:tanh] [--parent-child-weight 10] [--seed 1] --out full-set/

All 7815 structures of ../shared/data/tio2, MAXENERGY 1.0 eV/atom, 10 % of the parents held out (seeded),
full-batch L-BFGS until ``--minutes`` of training time (``--max-minutes``). For each row: test energy MAE/RMSE
(meV/atom), force MAE/RMSE (eV/Å), epochs, training and wall time, and where the energy RMSE comes from (the
worst test structures, their cohesive energy against the MAXENERGY edge, the RMSE without the worst five).
Writes OUT/ROW.pt (model), OUT/full-set.json and a table on stdout. Runs one row at a time, on ``--threads``
threads (default: PyTorch's choice, 2 on the reference machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import TIO2, TYPES, unpacked_tio2  # noqa: E402  (the same data and unpacking)

ROWS = {
    "energy": [],
    "forces": ["--force-weight", "0.1"],
    "forces-f0.1": ["--force-weight", "0.1", "--force-fraction", "0.1"],
    "parent-child": ["--augment-a", "4", "--augment-delta", "0.01", "--derived-weight", "0"],
}
MAX_ENERGY = 1.0


def where_the_rmse_comes_from(model: Path) -> dict:
    """Test errors per structure of a trained model: the worst five, their distance below MAXENERGY, the RMSE
    without them."""
    from pyita.io import read_xsf
    from pyita.model.load import load_potential
    from pyita.metrics import error_tables
    from pyita.predict import predict
    from pyita.reference import cohesive_per_atom

    potential = load_potential(model)
    test = [read_xsf(path) for path in potential.metadata["test_sources"]]
    predictions = predict(potential, test)
    rows = error_tables(test, [p.energy for p in predictions], [p.forces for p in predictions],
                        potential.reference_energies())[0]
    errors = np.array([r["error_meV_per_atom"] for r in rows], dtype=float)
    order = np.argsort(-np.abs(errors))
    worst = [{"source": Path(test[k].source).name, "error_meV_per_atom": float(errors[k]),
              "cohesive_eV_per_atom": cohesive_per_atom(test[k], TYPES)} for k in order[:5]]
    rest = np.delete(errors, order[:5])
    cohesive = np.array([cohesive_per_atom(s, TYPES) for s in test])
    edge = cohesive >= np.quantile(cohesive, 0.9)   # the tenth of the test set nearest the MAXENERGY cut

    def rmse(values):
        return float(np.sqrt(np.mean(values ** 2)))

    return {"worst": worst, "rmse_without_worst_5": rmse(rest), "edge_from_eV_per_atom": float(cohesive[edge].min()),
            "rmse_highest_tenth": rmse(errors[edge]), "rmse_other_nine_tenths": rmse(errors[~edge])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="training-time budget per row")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"any of {', '.join(ROWS)}")
    parser.add_argument("--hidden", default="15:tanh,15:tanh")
    parser.add_argument("--parent-child-weight", default="10", help="the parent–child row's loss weight")
    parser.add_argument("--seed", type=int, default=1, help="split and initial weights")
    parser.add_argument("--threads", type=int, help="threads per run (OMP_NUM_THREADS; default: PyTorch's choice)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the models and full-set.json")
    args = parser.parse_args()
    if not (TIO2 / "tio2-xsf-full.tar.gz").exists():
        sys.exit(f"TiO2 data not found in {TIO2}")
    from pyita import __version__
    from pyita.io.atomic import atomic_write_text

    data = unpacked_tio2()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "full-set.json"
    results = json.loads(results_path.read_text())["rows"] if results_path.exists() else {}
    types = ",".join(f"{k}={v}" for k, v in TYPES.items())
    for row in args.rows.split(","):
        model = args.out / f"{row}.pt"
        command = ["pyita", "train", str(data), "--types", types, "--max-energy", str(MAX_ENERGY),
                   "--test-fraction", "0.1", "--seed", str(args.seed), "--hidden", args.hidden,
                   "--iterations", "1000000", "--max-minutes", str(args.minutes), "--overwrite", "--quiet",
                   "--out", str(model), *ROWS[row],
                   *(["--parent-child-weight", args.parent_child_weight] if row == "parent-child" else [])]
        start = time.perf_counter()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
        subprocess.run(command, check=True, env=env)
        wall = time.perf_counter() - start
        from pyita.model.load import load_potential

        meta = load_potential(model).metadata
        test = meta["test_errors"]
        results[row] = {"command": command, "threads": args.threads, "wall_seconds": wall,
                        "train_seconds": meta["train_seconds"], "epochs": len(meta["history"]), "hidden": args.hidden,
                        "energy_mae": test["energy_meV_per_atom"]["mae"],
                        "energy_rmse": test["energy_meV_per_atom"]["rmse"],
                        "force_mae": test["force_components_eV_per_A"]["mae"],
                        "force_rmse": test["force_components_eV_per_A"]["rmse"],
                        "train_energy_rmse": meta["history"][-1]["train_rmse"],
                        **where_the_rmse_comes_from(model)}
        atomic_write_text(results_path, json.dumps({"pyita_version": __version__, "minutes": args.minutes,
                                                    "seed": args.seed, "rows": results}, indent=1) + "\n")
        r = results[row]
        print(f"{row:>13}: {r['epochs']} epochs in {r['train_seconds'] / 60:.1f} min (wall {wall / 60:.1f}); test "
              f"energy MAE/RMSE {r['energy_mae']:.2f}/{r['energy_rmse']:.2f} meV/atom (without the worst 5: "
              f"{r['rmse_without_worst_5']:.2f}); forces {r['force_mae']:.3f}/{r['force_rmse']:.3f} eV/Å",
              flush=True)


if __name__ == "__main__":
    main()
