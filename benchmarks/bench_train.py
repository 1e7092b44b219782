"""Training speed and memory on the 1000-structure TiO2 subset, against aenet 2.0.4 on the same machine type.

    python benchmarks/bench_train.py [--epochs 30] [--force-epochs 5] [--threads 2] [--out result.json]

Two parts, each in its own process so that peak RSS belongs to one kind of training:
  energy: full-batch L-BFGS, energy only (features computed once, here without the disk cache);
  forces: full-batch L-BFGS with a force term (descriptor Jacobians precomputed once);
  parent-child: full-batch L-BFGS with the parent–child Taylor loss on a = 6 balanced derived structures per
    parent (δ = 0.03 Å, 6000 children; features computed once, one extra forward pass per child).
  aenet: when aenet is installed (AENET_BIN, --aenet-bin, or ../shared/tools/aenet-2.0.4/bin), its train.x on
    the same 1000 structures (2×15 tanh, bfgs, energy only), timed in this command: the difference between a
    25- and a 5-epoch run per extra epoch. Without aenet, docs/aenet-formats.md's 2.0 s per epoch stands in.
Needs ../shared/data/tio2 (the archive unpacked to ~/.cache/pyita-tests/tio2, as the tests do).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tarfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads distort timings on shared cores

ROOT = Path(__file__).resolve().parents[1]
TIO2 = ROOT.parent / "shared" / "data" / "tio2"
AENET_SECONDS_PER_EPOCH = 2.0   # docs/aenet-formats.md, used only when aenet itself is not installed
AENET_SHARED = ROOT.parent / "shared" / "tools" / "aenet-2.0.4" / "bin"
PARTS = ("energy", "forces", "parent-child")
TYPES = {"Ti": -1626.66972707, "O": -433.23448532}


def unpacked_tio2() -> Path:
    """The folder of the full set's XSF files, unpacked once (as the tests do) from ../shared/data/tio2."""
    cache = Path(os.environ.get("PYITA_TEST_CACHE", Path.home() / ".cache" / "pyita-tests")) / "tio2"
    if not (cache / ".complete").exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tarfile.open(TIO2 / "tio2-xsf-full.tar.gz") as tar:
            tar.extractall(cache, filter="data")
        (cache / ".complete").touch()
    return cache / "xsf"


def subset_structures():
    from pyita.io import read_xsf

    names = (TIO2 / "subset-1000.txt").read_text().split()
    return [read_xsf(unpacked_tio2() / Path(n).name) for n in names]


def aenet_seconds_per_epoch(aenet_bin: str | None) -> float | None:
    """train.x's time per epoch on the 1000 structures, from two runs (5 and 25 epochs); None without aenet."""
    import tempfile

    from pyita.backends.aenet import find_executables, train_and_evaluate_aenet
    from pyita.errors import PyitaError

    try:
        find_executables(aenet_bin)
    except PyitaError:
        return None
    structures = subset_structures()
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="bench-aenet-") as scratch:
        for epochs in (5, 25):
            result = train_and_evaluate_aenet(structures, structures[:1], {"iterations": epochs,
                                              "hidden": "15:tanh,15:tanh", "reference_energies": TYPES},
                                              Path(scratch) / f"run{epochs}", aenet_bin=aenet_bin)
            seconds[epochs] = result["step_seconds"]["train"]
    return (seconds[25] - seconds[5]) / 20


def run_part(part: str, epochs: int, threads: int) -> dict:
    import torch

    from pyita.train.fit import train
    from pyita.train.settings import TrainSettings

    torch.set_num_threads(threads)
    structures = subset_structures()
    if part == "parent-child":
        from pyita.augment import augment

        structures = structures + augment(structures, a=6, delta=0.03, seed=0)
    settings = TrainSettings.from_flat(iterations=epochs, force_weight=1.0 if part == "forces" else 0.0,
                                       device="cpu", seed=0, derived_weight=0.0 if part == "parent-child" else 1.0,
                                       parent_child_weight=10.0 if part == "parent-child" else 0.0)
    start = time.perf_counter()
    result = train(structures, settings=settings, reference_energies=TYPES, use_cache=False)
    total = time.perf_counter() - start
    seconds = [row["seconds"] for row in result.history]
    per_epoch = (seconds[-1] - seconds[0]) / (len(seconds) - 1)  # the first epoch includes one-off warm-up
    return {
        "part": part, "structures": len(structures), "atoms": sum(len(s) for s in structures),
        "epochs": epochs, "seconds_per_epoch": per_epoch, "setup_seconds": total - seconds[-1],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "final_train_rmse_meV_per_atom": result.history[-1]["train_rmse"],
        "final_train_force_rmse": result.history[-1].get("train_force_rmse"),
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="energy-only L-BFGS epochs to time")
    parser.add_argument("--force-epochs", type=int, default=5, help="force-training epochs to time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--aenet-bin", help="folder of aenet's programs (default: AENET_BIN, ../shared/tools, PATH)")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    if not (TIO2 / "tio2-xsf-full.tar.gz").exists():
        sys.exit(f"TiO2 data not found in {TIO2}")
    if args.part:
        epochs = args.force_epochs if args.part == "forces" else args.epochs
        print(json.dumps(run_part(args.part, epochs, args.threads)))
        return
    from pyita import __version__

    if args.aenet_bin is None and "AENET_BIN" not in os.environ and AENET_SHARED.is_dir():
        args.aenet_bin = str(AENET_SHARED)
    measured = aenet_seconds_per_epoch(args.aenet_bin)
    aenet = measured if measured is not None else AENET_SECONDS_PER_EPOCH
    print(f" aenet: {aenet:.3f} s/epoch " + ("(train.x, measured now)" if measured is not None
                                             else "(aenet not installed: docs/aenet-formats.md's figure)"))
    results = {"pyita_version": __version__, "aenet_seconds_per_epoch": aenet, "aenet_measured": measured is not None,
               "parts": []}
    for part in PARTS:
        output = subprocess.run([sys.executable, __file__, "--part", part, "--epochs", str(args.epochs),
                                 "--force-epochs", str(args.force_epochs), "--threads", str(args.threads)],
                                capture_output=True, text=True, check=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        row["speedup_vs_aenet"] = aenet / row["seconds_per_epoch"]
        results["parts"].append(row)
        print(f"{part:>6}: {row['seconds_per_epoch']:.3f} s/epoch ({row['speedup_vs_aenet']:.1f}× aenet's "
              f"{aenet:.2f} s), setup {row['setup_seconds']:.1f} s, peak RSS {row['peak_rss_gib']:.2f} GiB")
    energy, forces, pair = results["parts"]
    results["force_over_energy_epoch_cost"] = forces["seconds_per_epoch"] / energy["seconds_per_epoch"]
    results["parent_child_over_energy_epoch_cost"] = pair["seconds_per_epoch"] / energy["seconds_per_epoch"]
    results["force_over_parent_child_epoch_cost"] = forces["seconds_per_epoch"] / pair["seconds_per_epoch"]
    print(f"force training costs {results['force_over_energy_epoch_cost']:.1f}× an energy-only epoch; "
          f"parent–child (6000 children) {results['parent_child_over_energy_epoch_cost']:.1f}×; "
          f"force / parent–child {results['force_over_parent_child_epoch_cost']:.1f}×")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
