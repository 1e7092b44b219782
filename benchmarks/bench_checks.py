"""What two of issue 22's checks cost, each as a ratio against the same work without it, in one process.

1. The feature cache's integrity check: a warm load (keys, read, sizes against each other, the descriptor and
   the structures, blake2b checksum, finite features) against the bare read of the same shards.
2. The geometry check before every neighbour search (``structure.neighbor_search_problem``: finite
   coordinates, what vesin's cell list can divide, neighbours per atom, memory): featurization with it against
   featurization with it replaced by a no-op.

Run as ``python benchmarks/bench_checks.py [--structures N] [--repeats R]``; uses the published TiO2 set from
../shared/data/tio2 when present, else the bundled sample.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

import pyita.descriptors.neighbors as neighbors  # noqa: E402
from pyita.descriptors import ChebyshevDescriptor, featurize  # noqa: E402
from pyita.train.cache import _settings_folder, cached_features  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))


def structures(n: int):
    from bench_train import TIO2

    if (TIO2 / "tio2-xsf-full.tar.gz").exists():
        from bench_train import unpacked_tio2
        from pyita.io import read_structures

        return read_structures(str(unpacked_tio2()))[:n], "TiO2 (aenet's set)"
    from pyita.sample import load_sample

    return load_sample("tio2-md")[:n], "bundled sample tio2-md"


def best_of(repeats: int, call) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, name = structures(args.structures)
    descriptor = ChebyshevDescriptor(sorted({s for st in data for s in st.symbols}))
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cached_features(descriptor, data, cache_dir=cache)
        cold = time.perf_counter() - start
        shards = sorted(_settings_folder(Path(cache), descriptor.settings()).glob("*.pt"))
        size = sum(p.stat().st_size for p in shards) / 2**20
        bare = best_of(args.repeats, lambda: [torch.load(p, weights_only=True) for p in shards])
        warm = best_of(args.repeats, lambda: cached_features(descriptor, data, cache_dir=cache))
    atoms = sum(len(s) for s in data)
    print(f"{name}: {len(data)} structures, {atoms} atoms, {descriptor.n_features} features, {size:.1f} MiB cache")
    print(f"featurize and write (cold): {cold:.2f} s")
    print(f"bare read of the shards:    {bare:.3f} s")
    print(f"warm load with the check:   {warm:.3f} s  ({warm / bare:.2f}x the bare read, "
          f"{warm / cold:.1%} of the cold run)")
    real = neighbors.neighbor_search_problem
    checked, unchecked = [], []
    try:
        for _ in range(args.repeats):   # alternated, so that neither side gets the warmer caches
            for check, times in ((real, checked), (lambda *a: None, unchecked)):
                neighbors.neighbor_search_problem = check
                times.append(best_of(1, lambda: featurize(descriptor, data, batch_size=50)))
    finally:
        neighbors.neighbor_search_problem = real
    checked, unchecked = min(checked), min(unchecked)
    print(f"featurize with the geometry check: {checked:.3f} s, without: {unchecked:.3f} s "
          f"({checked / unchecked:.3f}x)")


if __name__ == "__main__":
    main()
