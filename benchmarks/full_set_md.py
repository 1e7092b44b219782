"""Stability in molecular dynamics of the full-TiO2 recipes of ``full_set.py`` (issue 26): no reference calculator
exists for DFT, so stability alone — the fraction of runs that survive and the time to failure.

    python benchmarks/full_set.py --rows energy,forces-f0.1,forces,parent-child --minutes 15 --out full-set/
    python benchmarks/full_set_md.py full-set/*.pt [--starts 8] [--replicas 2] [--steps 1000] \\
        [--temperature 300] [--seed 0] --out full-set-md/

Every model runs the same dynamics: the same ``--starts`` test parents (evenly spread through the test set its
training held out — the same for all rows of one ``full_set.py`` split), the same velocities (seeded by start and
replica, not by model), NVT at ``--temperature``; the failure thresholds (``pyita.md.failure``) come from the
shortest distances of the structures the models trained on (the data less the test parents). Writes
OUT/full-set-md.json (settings, seed, version, every run's outcome) and OUT/full-set-md.csv (a row per model), and
prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import TIO2  # noqa: E402  (the same data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="models of full_set.py (ROW.pt)")
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not (TIO2 / "tio2-xsf-full.tar.gz").exists():
        sys.exit(f"TiO2 data not found in {TIO2}")
    from pyita import __version__
    from pyita.io import read_xsf
    from pyita.io.atomic import atomic_write_text
    from pyita.md.run import simulate, start_indices
    from pyita.md.settings import MDSettings
    from pyita.model.load import load_potential

    settings = MDSettings(temperature=args.temperature, steps=args.steps, replicas=args.replicas, seed=args.seed,
                          write_every=args.steps)
    potentials = {model.stem: load_potential(model) for model in args.models}
    tests = {tuple(p.metadata["test_sources"]) for p in potentials.values()}
    if len(tests) != 1:
        sys.exit("the models held out different test sets: give models of one full_set.py split")
    test = list(next(iter(tests)))
    starts = [read_xsf(test[k]) for k in start_indices(len(test), args.starts)]
    held_out = {Path(name).name for name in test}
    data = Path(test[0]).parent
    trained_on = [read_xsf(path) for path in sorted(data.glob("*.xsf")) if path.name not in held_out]
    rows, runs = [], {}
    for name, potential in potentials.items():
        began = time.perf_counter()
        done = simulate(potential, starts, replace(settings, starts=None), thresholds_from=trained_on)
        seconds = time.perf_counter() - began
        length = settings.steps * settings.timestep
        times = np.array([r.failure["time_fs"] if r.failure else length for r in done.runs])
        criteria = [r.failure["criterion"] for r in done.runs if r.failure]
        rows.append({"model": name, "runs": len(done.runs), "stable": int(sum(r.failure is None for r in done.runs)),
                     "stable_fraction": float(np.mean([r.failure is None for r in done.runs])),
                     "median_time_to_failure_fs": float(np.median(times)), "run_length_fs": length,
                     "failures": {c: criteria.count(c) for c in sorted(set(criteria))},
                     "test_energy_mae_meV_atom": potential.metadata["test_errors"]["energy_meV_per_atom"]["mae"],
                     "test_force_mae_eV_A": potential.metadata["test_errors"]["force_components_eV_per_A"]["mae"],
                     "seconds": round(seconds, 1)})
        runs[name] = [{"run": r.name, "source": Path(r.source).name, "failure": r.failure} for r in done.runs]
        r = rows[-1]
        print(f"{name:>13}: {r['stable']}/{r['runs']} stable, median time to failure "
              f"{r['median_time_to_failure_fs']:.0f} fs, failures {r['failures'] or '-'}; test MAE "
              f"{r['test_energy_mae_meV_atom']:.2f} meV/atom, "
              f"{r['test_force_mae_eV_A']:.3f} eV/Å ({seconds:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"pyita_version": __version__, "settings": settings.as_dict(), "starts": [s.source for s in starts],
              "models": [str(m.resolve()) for m in args.models], "rows": rows, "runs": runs}
    atomic_write_text(args.out / "full-set-md.json", json.dumps(record, indent=1, default=str) + "\n")
    columns = [k for k in rows[0] if k != "failures"]
    table = io.StringIO()
    writer = csv.DictWriter(table, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(args.out / "full-set-md.csv", table.getvalue())


if __name__ == "__main__":
    main()
