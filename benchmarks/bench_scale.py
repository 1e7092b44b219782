"""Training cost against cell size: time per epoch and peak memory for energy-only, direct force training
(all structures, and a 10 % force fraction) and the parent–child loss, on supercells of real TiO2 cells.

    python benchmarks/bench_scale.py [--structures 200] [--reps 1x1x1,2x1x1,2x2x1,2x2x2,3x3x3] [--epochs 3]
                                     [--threads 2] [--parts energy,forces,...] [--max-memory GiB] [--out scale.json]

``--parts "forces adam" --max-memory 8`` measures Adam force training as a job with an 8 GiB limit would run it
(``pyita train --max-memory 8``: Jacobians that do not fit are computed per mini-batch, or per chunk with L-BFGS).

    python benchmarks/bench_scale.py --memory-study [--max-memory 8] [--epochs 2] [--out memory.json]

measures 60 and 200 cells of 648 atoms inside that limit (issue 24): stored Jacobians (60 cells, without the
limit, if the machine has room), streamed L-BFGS and streamed Adam, with the ratio of each epoch to the stored
one and the peak RSS of each run.

Data: the first ``--structures`` 24-atom cells of ../shared/data/tio2, each repeated n1×n2×n3 (24 … 648 atoms
per cell); without that data, the bundled sample's 24-atom cells (repeated in turn; say so in any result). Their
labels are exact: a repeated cell's energy is n1·n2·n3 times the cell's, its forces are the cell's tiled. Every
(size, part) runs in its own process, so its peak RSS (ru_maxrss) is its own; a part that PyITA refuses (e.g. one
chunk of Jacobians that does not fit) is recorded with its message. Writes a table, JSON (``--out``) and, for the
size scan, a plot of peak memory and epoch time against the total number of atoms (beside the JSON).
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


def tio2_cells(count: int):
    """``count`` 24-atom TiO2 cells: the real data's (1000-structure subset) if present, else the bundled sample's
    in turn (fewer distinct cells: the timings and memory hold, the fits mean nothing)."""
    from pyita.sample import load_sample

    if (TIO2 / "tio2-xsf-full.tar.gz").exists():
        cells = [s for s in subset_structures() if len(s) == 24][:count]
        if len(cells) < count:
            sys.exit(f"only {len(cells)} 24-atom cells in the subset, {count} asked for")
        return cells
    cells = [s for s in load_sample("tio2-diverse") if len(s) == 24]
    return [cells[k % len(cells)] for k in range(count)] if cells else []


def supercells(count: int, reps: tuple[int, int, int]):
    """``count`` 24-atom TiO2 cells, repeated ``reps``, labels exact."""
    import numpy as np

    from pyita.structure import Structure

    copies = reps[0] * reps[1] * reps[2]
    out = []
    for s in tio2_cells(count):
        atoms = s.to_ase().repeat(reps)   # image by image, each holding all the cell's atoms in order
        out.append(Structure(symbols=list(atoms.get_chemical_symbols()), positions=atoms.positions,
                             cell=np.array(atoms.cell), energy=s.energy * copies,
                             forces=np.tile(s.forces, (copies, 1)), source=f"{s.source}×{reps}"))
    return out


def _count_evaluations():
    """Count the trainer's full-set loss evaluations (L-BFGS's closure calls and line search), stored or streamed."""
    from pyita.train.trainer import Trainer

    count = {"evaluations": 0}
    for name in ("loss", "_streamed_loss"):
        original = getattr(Trainer, name)

        def counted(self, data, *args, _original=original, **kwargs):
            count["evaluations"] += data is self.train
            return _original(self, data, *args, **kwargs)

        setattr(Trainer, name, counted)
    return count


def run_part(part: str, count: int, reps: tuple[int, int, int], epochs: int, threads: int,
             max_memory: float | None = None) -> dict:
    import warnings

    import torch

    from pyita.descriptors import ChebyshevDescriptor
    from pyita.errors import PyitaError
    from pyita.train.fit import train
    from pyita.descriptors.jacobian import jacobian_bytes
    from pyita.train.settings import TrainSettings

    torch.set_num_threads(threads)
    structures = supercells(count, reps)
    if part == "parent-child":
        from pyita.augment import augment

        structures = structures + augment(structures, a=1, delta=0.03, seed=0)
    row = {"part": part, "reps": "x".join(map(str, reps)), "atoms_per_cell": len(structures[0]),
           "structures": len(structures), "atoms": sum(len(s) for s in structures), "epochs": epochs,
           "max_memory": max_memory}
    settings = TrainSettings.from_flat(iterations=epochs, device="cpu", seed=0, max_memory=max_memory, **PARTS[part])
    loss = settings.loss
    if loss.force_weight > 0:   # what the stored Jacobians of the force-trained share take, and dense ones would
        descriptor = ChebyshevDescriptor(tuple(TYPES))
        trained = max(1, round(loss.force_fraction * len(structures)))
        row["jacobian_gib"] = jacobian_bytes(structures, descriptor) / len(structures) * trained / 2**30
        row["dense_jacobian_gib"] = len(structures[0]) ** 2 * descriptor.n_features * 3 * 8 * trained / 2**30
    counter = _count_evaluations()
    start = time.perf_counter()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train(structures, settings=settings, reference_energies=TYPES, use_cache=False)
    except PyitaError as exc:
        return {**row, "refused": str(exc), "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    notes = [str(w.message) for w in caught if "descriptor Jacobians" in str(w.message)]
    seconds = [r["seconds"] for r in result.history]
    return {**row, "jacobians": ("streamed" if notes else "stored") if loss.force_weight > 0 else "none",
            "note": notes[0] if notes else "", "evaluations": counter["evaluations"],
            "seconds_per_epoch": (seconds[-1] - seconds[0]) / max(1, len(seconds) - 1),
            "first_epoch_seconds": seconds[0], "setup_seconds": time.perf_counter() - start - seconds[-1],
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


#: The memory study (issue 24): (cells, part, capped), 648-atom cells; "forces" is full-batch L-BFGS.
STUDY = [(60, "forces", False), (60, "forces", True), (60, "forces adam", True), (200, "forces", True),
         (200, "forces adam", True)]


def measure(part: str, count: int, reps: str, args, max_memory: float | None) -> dict:
    """One (size, part) in its own process: its peak RSS is its own; a run killed (for memory) is recorded."""
    done = subprocess.run([sys.executable, __file__, "--run", f"{part}|{reps}", "--structures", str(count),
                           "--epochs", str(args.epochs), "--threads", str(args.threads)]
                          + (["--max-memory", str(max_memory)] if max_memory else []), capture_output=True, text=True)
    if done.returncode != 0:
        return {"part": part, "reps": reps, "structures": count, "max_memory": max_memory,
                "refused": f"exit {done.returncode}: {done.stderr[-300:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(row: dict) -> None:
    timing = (f"{row['seconds_per_epoch']:.3f} s/epoch (first {row['first_epoch_seconds']:.1f} s, "
              f"{row['evaluations']} evaluations), setup {row['setup_seconds']:.1f} s, {row['jacobians']}"
              if "seconds_per_epoch" in row else f"refused: {row['refused'][:160]}")
    cap = f" --max-memory {row['max_memory']:g}" if row.get("max_memory") else ""
    print(f"{row['reps']:>6} {row.get('structures', '?'):>4} × {row.get('atoms_per_cell', '?'):>4} atoms "
          f"{row['part']:>13}{cap}: {timing}, peak RSS {row.get('peak_rss_gib', float('nan')):.2f} GiB"
          + (f", Jacobians {row['jacobian_gib']:.2f} GiB" if "jacobian_gib" in row else ""), flush=True)


def memory_study(args) -> list[dict]:
    """60 and 200 cells of 648 atoms inside a --max-memory limit: stored, streamed L-BFGS and Adam; each epoch
    against the stored L-BFGS epoch of the same cells where that ran."""
    rows = []
    for count, part, capped in STUDY:
        row = measure(part, count, "3x3x3", args, args.max_memory if capped else None)
        rows.append(row)
        show(row)
    stored = {r["structures"]: r for r in rows if r.get("jacobians") == "stored" and r["part"] == "forces"}
    for row in rows:
        base = stored.get(row.get("structures"))
        if base and "seconds_per_epoch" in row and row is not base:
            row["epoch_vs_stored"] = row["seconds_per_epoch"] / base["seconds_per_epoch"]
            print(f"{row['structures']} cells, {row['part']} {row['jacobians']}: epoch "
                  f"{row['epoch_vs_stored']:.2f}× the stored L-BFGS epoch")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--structures", type=int, default=200)
    parser.add_argument("--reps", default="1x1x1,2x1x1,2x2x1,2x2x2,3x3x3")
    parser.add_argument("--epochs", type=int, default=3, help="epochs to run (the first is not counted)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default=",".join(DEFAULT_PARTS), help=f"any of {', '.join(PARTS)}")
    parser.add_argument("--max-memory", type=float, help="GiB the training process may use (pyita train's option)")
    parser.add_argument("--memory-study", action="store_true", help="60 and 200 cells of 648 atoms inside "
                        "--max-memory (default 8): stored, streamed L-BFGS, streamed Adam")
    parser.add_argument("--run", help=argparse.SUPPRESS)   # "part|reps": one measurement, in a child process
    parser.add_argument("--out", type=Path, help="write the rows as JSON, and the plot beside it")
    args = parser.parse_args()
    if not tio2_cells(1):
        print(f"no TiO2 data: neither {TIO2} nor the bundled sample's 24-atom cells; nothing measured")
        return
    if args.run:
        part, reps = args.run.split("|")
        print(json.dumps(run_part(part, args.structures, tuple(map(int, reps.split("x"))), args.epochs,
                                  args.threads, args.max_memory)))
        return
    from pyita import __version__

    data = "real" if (TIO2 / "tio2-xsf-full.tar.gz").exists() else "bundled sample (cells repeated)"
    if args.memory_study:
        args.max_memory = args.max_memory or 8.0
        rows = memory_study(args)
    else:
        rows = []
        for reps in args.reps.split(","):
            for part in args.parts.split(","):
                rows.append(measure(part, args.structures, reps, args, args.max_memory))
                show(rows[-1])
    if args.out:
        args.out.write_text(json.dumps({"pyita_version": __version__, "data": data, "structures": args.structures,
                                        "epochs": args.epochs, "threads": args.threads, "rows": rows}, indent=1)
                            + "\n")
        if not args.memory_study:
            plot(rows, args.out)


if __name__ == "__main__":
    main()
