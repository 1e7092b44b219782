"""Training cost against cell size: time per epoch and peak memory for energy-only, direct force training
(all structures, and a 10 % force fraction) and the parent–child loss, on supercells of real TiO2 cells.

    python benchmarks/bench_scale.py [--structures 200] [--reps 1x1x1,2x1x1,2x2x1,2x2x2,3x3x3] [--epochs 3]
                                     [--threads 2] [--parts energy,forces,...] [--memory-limit GiB] [--out scale.json]

``--parts "forces adam" --memory-limit 8`` measures Adam force training on a machine with 8 GiB free: Jacobians
that do not fit are then computed per mini-batch instead of stored.

Data: the first ``--structures`` 24-atom cells of ../shared/data/tio2, each repeated n1×n2×n3 (24 … 648 atoms
per cell). Their labels are exact: a repeated cell's energy is n1·n2·n3 times the cell's, its forces are the
cell's tiled. Every (size, part) runs in its own process, so its peak RSS is its own; a part that PyITA
refuses (e.g. descriptor Jacobians that do not fit in memory) is recorded with its message. Writes a table,
JSON (``--out``) and a plot of peak memory and epoch time against the total number of atoms
(``--out`` with .png/.svg beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning OpenMP threads distort timings on shared cores
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import TIO2, TYPES, subset_structures  # noqa: E402  (the same data and unpacking)

PARTS = {"energy": {}, "forces": {"force_weight": 1.0}, "forces f=0.1": {"force_weight": 1.0, "force_fraction": 0.1},
         "parent-child": {"parent_child_weight": 10.0, "derived_weight": 0.0},
         "forces adam": {"force_weight": 1.0, "method": "adam", "batch_size": 32}}
DEFAULT_PARTS = ("energy", "forces", "forces f=0.1", "parent-child")


def supercells(count: int, reps: tuple[int, int, int]):
    """The first ``count`` 24-atom TiO2 cells of the 1000-structure subset, repeated ``reps``, labels exact."""
    import numpy as np

    from pyita.structure import Structure

    cells = [s for s in subset_structures() if len(s) == 24][:count]
    if len(cells) < count:
        sys.exit(f"only {len(cells)} 24-atom cells in the subset, {count} asked for")
    copies = reps[0] * reps[1] * reps[2]
    out = []
    for s in cells:
        atoms = s.to_ase().repeat(reps)   # image by image, each holding all the cell's atoms in order
        out.append(Structure(symbols=list(atoms.get_chemical_symbols()), positions=atoms.positions,
                             cell=np.array(atoms.cell), energy=s.energy * copies,
                             forces=np.tile(s.forces, (copies, 1)), source=f"{s.source}×{reps}"))
    return out


def run_part(part: str, count: int, reps: tuple[int, int, int], epochs: int, threads: int,
             memory_limit: float | None = None) -> dict:
    import torch

    from pyita.descriptors import ChebyshevDescriptor
    from pyita.errors import PyitaError
    from pyita.train.fit import train
    from pyita.descriptors.jacobian import jacobian_bytes
    from pyita.train.settings import TrainSettings

    torch.set_num_threads(threads)
    if memory_limit:   # a machine with this much free memory: Jacobians that do not fit are not stored
        from pyita.train import fit

        actual = fit._available_memory
        fit._available_memory = lambda: min(actual() or 2**62, int(memory_limit * 2**30))
    structures = supercells(count, reps)
    if part == "parent-child":
        from pyita.augment import augment

        structures = structures + augment(structures, a=1, delta=0.03, seed=0)
    row = {"part": part, "reps": "x".join(map(str, reps)), "atoms_per_cell": len(structures[0]),
           "structures": len(structures), "atoms": sum(len(s) for s in structures), "epochs": epochs}
    settings = TrainSettings.from_flat(iterations=epochs, device="cpu", seed=0, **PARTS[part])
    loss = settings.loss
    if loss.force_weight > 0:   # what the stored Jacobians of the force-trained share take, and dense ones would
        descriptor = ChebyshevDescriptor(tuple(TYPES))
        trained = max(1, round(loss.force_fraction * len(structures)))
        row["jacobian_gib"] = jacobian_bytes(structures, descriptor) / len(structures) * trained / 2**30
        row["dense_jacobian_gib"] = len(structures[0]) ** 2 * descriptor.n_features * 3 * 8 * trained / 2**30
    start = time.perf_counter()
    try:
        result = train(structures, settings=settings, reference_energies=TYPES, use_cache=False)
    except PyitaError as exc:
        return {**row, "refused": str(exc), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    seconds = [r["seconds"] for r in result.history]
    return {**row, "seconds_per_epoch": (seconds[-1] - seconds[0]) / max(1, len(seconds) - 1),
            "setup_seconds": time.perf_counter() - start - seconds[-1],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pyita.experiment.plots import log_log

    stored = sorted((r for r in rows if "jacobian_gib" in r and "force_fraction" not in PARTS[r["part"]]),
                    key=lambda r: r["atoms_per_cell"])
    fig, axes = plt.subplots(1, 3 if stored else 2, figsize=(15 if stored else 11, 4.2))
    for k, part in enumerate(p for p in PARTS if any(r["part"] == p for r in rows)):
        mine = sorted((r for r in rows if r["part"] == part and "refused" not in r), key=lambda r: r["atoms"])
        axes[0].plot([r["atoms"] for r in mine], [r["peak_rss_gib"] for r in mine], "o-", color=f"C{k}", label=part)
        axes[1].plot([r["atoms"] for r in mine], [r["seconds_per_epoch"] for r in mine], "o-", color=f"C{k}",
                     label=part)
    for ax, label in ((axes[0], "peak RSS (GiB)"), (axes[1], "seconds per epoch")):
        log_log(ax, "atoms in the training set", label)
    axes[0].legend(fontsize=8)
    if stored:
        jacobian_panel(axes[2], stored)
    fig.tight_layout()
    for suffix in (".png", ".svg"):
        fig.savefig(out.with_suffix(suffix), dpi=120)


def jacobian_panel(ax, stored: list[dict]) -> None:
    """Jacobian memory per atom against the cell size: stored blocks, and the dense N × N storage of before."""
    import matplotlib

    cells = [r["atoms_per_cell"] for r in stored]
    for key, label, style in (("jacobian_gib", "stored blocks (linked pairs)", "o-"),
                              ("dense_jacobian_gib", "dense N × N (before)", "s--")):
        ax.plot(cells, [r[key] * 2**30 / 1e3 / r["atoms"] for r in stored], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(cells, [str(c) for c in cells])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("atoms per cell")
    ax.set_ylabel("Jacobian memory per atom (kB)")
    ax.legend(fontsize=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", type=int, default=200)
    parser.add_argument("--reps", default="1x1x1,2x1x1,2x2x1,2x2x2,3x3x3")
    parser.add_argument("--epochs", type=int, default=3, help="L-BFGS epochs to time (the first is not counted)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--memory-limit", type=float, help="pretend only this many GiB are free")
    parser.add_argument("--run", help=argparse.SUPPRESS)   # "part|reps": one measurement, in a child process
    parser.add_argument("--out", type=Path, help="write the rows as JSON, and the plot beside it")
    args = parser.parse_args()
    if not (TIO2 / "tio2-xsf-full.tar.gz").exists():
        sys.exit(f"TiO2 data not found in {TIO2}")
    if args.run:
        part, reps = args.run.split("|")
        print(json.dumps(run_part(part, args.structures, tuple(map(int, reps.split("x"))), args.epochs,
                                  args.threads, args.memory_limit)))
        return
    from pyita import __version__

    rows = []
    for reps in args.reps.split(","):
        for part in args.parts.split(","):
            done = subprocess.run([sys.executable, __file__, "--run", f"{part}|{reps}", "--structures",
                                   str(args.structures), "--epochs", str(args.epochs), "--threads", str(args.threads)]
                                  + (["--memory-limit", str(args.memory_limit)] if args.memory_limit else []),
                                  capture_output=True, text=True)
            if done.returncode != 0:   # e.g. killed for memory: record it, go on
                row = {"part": part, "reps": reps, "refused": f"exit {done.returncode}: {done.stderr[-300:]}"}
            else:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            timing = (f"{row['seconds_per_epoch']:.3f} s/epoch, setup {row['setup_seconds']:.1f} s"
                      if "seconds_per_epoch" in row else f"refused: {row['refused'][:90]}")
            print(f"{reps:>6} {row.get('atoms_per_cell', '?'):>4} atoms/cell {part:>13}: {timing}, peak RSS "
                  f"{row.get('peak_rss_gib', float('nan')):.2f} GiB"
                  + (f", Jacobians {row['jacobian_gib']:.2f} GiB" if "jacobian_gib" in row else ""), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"pyita_version": __version__, "structures": args.structures,
                                        "epochs": args.epochs, "threads": args.threads, "rows": rows}, indent=1) + "\n")
        plot(rows, args.out)


if __name__ == "__main__":
    main()
