"""Featurization speed on the published 1000-structure TiO2 subset (aenet's generate.x: 13.4 s).

Prints atoms/s for features alone and for features plus their derivatives (forces of a random linear
readout by autograd), and the peak resident memory. CPU time is printed next to wall time because on a
shared machine the wall time mostly measures the neighbours' load.
Run as ``python benchmarks/bench_featurize.py [--batch-size N] [--threads T]``; needs ../shared/data/tio2.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

# OpenMP threads that spin while waiting made torch 10-20x slower here whenever another process held a
# core; passive waiting avoids that. It must be set before torch loads; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from pyita.descriptors import ChebyshevDescriptor, featurize, make_batch  # noqa: E402
from pyita.io.xsf import read_xsf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import TIO2 as DATA, unpacked_tio2  # noqa: E402  (the same data, unpacked once)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def with_forces(descriptor, structures, batch_size: int) -> None:
    """Features, a random linear readout and its gradient w.r.t. positions, chunk by chunk."""
    readout = torch.randn(descriptor.n_features, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for start in range(0, len(structures), batch_size):
        batch = make_batch(structures[start:start + batch_size], descriptor.species, descriptor.cutoff)
        batch.positions.requires_grad_(True)
        energy = (descriptor(batch) @ readout).sum()
        torch.autograd.grad(energy, batch.positions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=50, help="structures per chunk")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice); on a busy "
                        "machine 1 thread can be many times faster than 2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    names = (DATA / "subset-1000.txt").read_text().split()
    folder = unpacked_tio2()
    start = time.perf_counter()
    structures = [read_xsf(folder / Path(name).name) for name in names]
    read_time = time.perf_counter() - start
    n_atoms = sum(len(s) for s in structures)
    descriptor = ChebyshevDescriptor(["Ti", "O"])
    print(f"{len(structures)} structures, {n_atoms} atoms, {descriptor.n_features} features, "
          f"{torch.get_num_threads()} threads (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}); "
          f"reading XSF: {read_time:.2f} s")

    for label, work in (("features only", featurize), ("with derivatives", with_forces)):
        wall, cpu = time.perf_counter(), time.process_time()
        work(descriptor, structures, batch_size=args.batch_size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{label:17s} {wall:6.2f} s wall ({cpu:6.2f} s CPU)  {n_atoms / wall:7.0f} atoms/s  "
              f"peak RSS so far {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
