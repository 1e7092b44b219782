"""Benchmark: PyitaCalculator.calculate_many (batched) against one Atoms at a time (ASE's usual calculator call),
in the same run, alternating, on the bundled TiO2 sample (energies, per-atom energies and forces).

    python benchmarks/bench_calculator.py                  # 169 structures, batches of 32, best of 3
    python benchmarks/bench_calculator.py --reps 5 --batch-size 64

The potential is an untrained one with PyITA's default architecture (2×15 tanh, aenet's TiO2 descriptor): the
time does not depend on the weights. Both ways give the same numbers (checked here, as tests/test_predict.py does).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sample", default="tio2-diverse")
    args = parser.parse_args()

    import torch

    from pyita.calculator import PyitaCalculator
    from pyita.descriptors import ChebyshevDescriptor
    from pyita.model import Potential
    from pyita.sample import load_sample

    torch.set_num_threads(1)
    atoms_list = [s.to_ase() for s in load_sample(args.sample)]
    calc = PyitaCalculator(Potential(ChebyshevDescriptor(("Ti", "O")), "15:tanh,15:tanh"), device="cpu")

    def one_by_one():
        out = []
        for atoms in atoms_list:
            atoms = atoms.copy()
            atoms.calc = calc
            out.append((atoms.get_potential_energy(), atoms.get_potential_energies(), atoms.get_forces()))
        return out

    def batched():
        return calc.calculate_many(atoms_list, batch_size=args.batch_size)

    def batched_stress():
        return calc.calculate_many(atoms_list, ("energy", "forces", "stress"), batch_size=args.batch_size)

    # one by one, the calculator computes a periodic cell's stress with its energy (as MD with a barostat needs
    # both); calculate_many only when asked: timed both ways
    jobs = (("one by one", one_by_one), ("calculate_many", batched), ("+ stress", batched_stress))
    times = {name: [] for name, _ in jobs}
    for _ in range(args.reps):
        for name, job in jobs:
            start = time.perf_counter()
            result = job()
            times[name].append(time.perf_counter() - start)
    single, many = one_by_one(), batched()
    assert all(abs(a[0] - b["energy"]) < 1e-9 and np.allclose(a[2], b["forces"], atol=1e-9)
               for a, b in zip(single, many)), "batched and single evaluations differ"
    del result
    print(f"{len(atoms_list)} structures ({sum(len(a) for a in atoms_list)} atoms), batch size {args.batch_size}, "
          f"1 thread, load average {os.getloadavg()[0]:.1f}")
    for name, values in times.items():
        print(f"  {name:15s} best {min(values):.3f} s  (all: {', '.join(f'{v:.3f}' for v in values)})")
    for name in ("calculate_many", "+ stress"):
        print(f"  one by one ÷ {name}: {min(times['one by one']) / min(times[name]):.2f}×")


if __name__ == "__main__":
    main()
