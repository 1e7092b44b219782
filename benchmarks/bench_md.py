"""MD speed: ``pyita md``'s batched step against ASE's VelocityVerlet with PyitaCalculator and aenet's predict.x.

For a 48-atom TiO2 cell (the bundled ``tio2-md`` sample's first frame) and a 648-atom one (the 24-atom brookite
cell of ``tio2-diverse`` repeated 3×3×3), with 1 and 8 replicas:

* ``pyita md``: the engine's NVE steps, all replicas in one model call per step;
* ASE: ``VelocityVerlet`` + ``PyitaCalculator``, the replicas one after another (as ASE runs them);
* predict.x: aenet's energy + force evaluation of the same structure with the same model exported to .nn files
  (one predict.x run over K copies less one over a single copy, so its start-up is left out); skipped cleanly
  where aenet is not installed (``AENET_BIN`` or ../shared/tools/aenet-2.0.4/bin).

Numbers are ms per step per atom (wall and CPU time), each the best of ``--repeat`` alternating measurements
after a warm-up; ratios (baseline ÷ pyita md, > 1: pyita md faster) are of wall times in the same run. The model is
``--model`` or, by default, random weights in the trainer's default architecture (Chebyshev 8.0/16, 6.5/4 Å;
15:tanh,15:tanh), whose cost is that of any trained model of that shape.
Run as ``python benchmarks/bench_md.py [--model force.pt] [--steps 20] [--repeat 3] [--threads T]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # spinning OpenMP waits: 10-20x slower on a shared machine

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pyita.architecture import ChebyshevSetup  # noqa: E402
from pyita.descriptors import ChebyshevDescriptor  # noqa: E402
from pyita.md.engine import Engine  # noqa: E402
from pyita.md.evaluate import pair_names  # noqa: E402
from pyita.md.run import make_runs  # noqa: E402
from pyita.md.settings import MDSettings  # noqa: E402
from pyita.model import Potential, load_potential  # noqa: E402
from pyita.sample import load_sample  # noqa: E402
from pyita.structure import Structure  # noqa: E402

AENET = Path(__file__).resolve().parents[2] / "shared" / "tools" / "aenet-2.0.4" / "bin"


def default_model() -> Potential:
    potential = Potential(ChebyshevDescriptor(("Ti", "O"), **ChebyshevSetup().descriptor_settings()),
                          "15:tanh,15:tanh", {"Ti": -1626.67, "O": -433.23}, seed=0)
    with torch.no_grad():
        potential.energy_scale.fill_(0.01)   # gentle forces: no run stops early
    return potential


def structures() -> dict[int, Structure]:
    small = load_sample("tio2-md")[0]
    brookite = load_sample("tio2-diverse")[2]
    assert len(brookite) == 24 and brookite.info.get("phase") == "brookite"
    big = Structure.from_ase(brookite.to_ase().repeat((3, 3, 3)))
    return {len(small): small, len(big): big}


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def per_step_atom(start, steps: int, atoms: int) -> tuple[float, float]:
    wall, cpu = clock()
    return (wall - start[0]) * 1000 / steps / atoms, (cpu - start[1]) * 1000 / steps / atoms


def bench_pyita(potential, structure: Structure, replicas: int, steps: int) -> tuple[float, float]:
    settings = MDSettings(ensemble="nve", temperature=300, steps=steps, write_every=steps, replicas=replicas,
                          max_drift=1e6, max_bond_stretch=100, max_temperature_factor=1e6)
    runs = make_runs([structure], [0], settings, "bench")
    thresholds = np.zeros(len(pair_names(potential.species)))
    with tempfile.TemporaryDirectory() as folder:
        start = clock()
        Engine(potential, runs, settings, thresholds, Path(folder), {}).simulate(checkpoint_every=10**9,
                                                                              progress=False)
        result = per_step_atom(start, steps + 1, replicas * len(structure))   # + the forces at the start
    assert all(run.running for run in runs), [run.failure for run in runs]
    return result


def bench_ase(potential, structure: Structure, replicas: int, steps: int) -> tuple[float, float]:
    from ase import units
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.md.verlet import VelocityVerlet

    from pyita.calculator import PyitaCalculator

    start = clock()
    for replica in range(replicas):
        atoms = structure.to_ase()
        atoms.calc = PyitaCalculator(potential)
        thermalize_momenta(atoms, 300, rng=np.random.default_rng(replica))
        VelocityVerlet(atoms, timestep=units.fs).run(steps)
    return per_step_atom(start, steps + 1, replicas * len(structure))


def bench_predict_x(potential, structure: Structure, copies: int) -> tuple[float, float] | None:
    """ms per evaluation per atom of predict.x with forces, its start-up subtracted; None without aenet."""
    from pyita.backends.aenet import find_executables, run_aenet_export
    from pyita.errors import PyitaError
    from pyita.io.aenet_inputs import PredictIn, format_predict_in
    from pyita.io.xsf_write import write_xsf
    from pyita.model.aenet import network_file_names

    os.environ.setdefault("AENET_BIN", str(AENET))
    try:
        exe = find_executables()["predict"]
    except PyitaError:
        return None
    folder = Path(tempfile.mkdtemp())
    try:
        run_aenet_export(potential, folder / "nn")
        networks = {s: str(folder / "nn" / name) for s, name in network_file_names(potential).items()}
        write_xsf(folder / "s.xsf", structure)
        times = {}
        for count in (1, copies):
            (folder / "predict.in").write_text(format_predict_in(PredictIn(networks=networks, files=["s.xsf"] * count,
                                                                           forces=True)))
            before = os.times()
            wall = time.perf_counter()
            done = subprocess.run([str(exe), "predict.in"], cwd=folder, capture_output=True, text=True)
            wall = time.perf_counter() - wall
            after = os.times()
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr
            times[count] = (wall, after.children_user + after.children_system
                            - before.children_user - before.children_system)
        extra = copies - 1
        return tuple((times[copies][k] - times[1][k]) * 1000 / extra / len(structure) for k in (0, 1))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file or folder of .nn files (default: random weights, default shape)")
    parser.add_argument("--steps", type=int, default=20, help="MD steps per measurement (648 atoms: a quarter)")
    parser.add_argument("--copies", type=int, default=20, help="predict.x: copies of the structure in one run")
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each case (the best is kept)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    potential = load_potential(args.model) if args.model else default_model()
    potential.eval()
    print(f"load average {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}; "
          f"model {args.model or 'random weights, default architecture'}")
    print("atoms replicas | pyita md ms/step/atom (wall, cpu) | ASE one by one (wall, cpu) ratio | "
          "predict.x ms/eval/atom (wall, cpu) ratio")
    for n, structure in structures().items():
        steps = args.steps if n < 100 else max(2, args.steps // 4)
        copies = args.copies if n < 100 else max(3, args.copies // 4)
        found = [bench_predict_x(potential, structure, copies) for _ in range(args.repeat)]
        aenet = None if found[0] is None else tuple(min(f[k] for f in found) for k in (0, 1))
        bench_pyita(potential, structure, 1, 1)   # warm-up: torch's first calls
        bench_ase(potential, structure, 1, 1)
        for replicas in (1, 8):
            times = [(bench_pyita(potential, structure, replicas, steps),
                      bench_ase(potential, structure, replicas, steps)) for _ in range(args.repeat)]
            ours, ase = ((min(t[k][0] for t in times), min(t[k][1] for t in times)) for k in (0, 1))
            line = (f"{n:5d} {replicas:8d} | {ours[0]:.4f}, {ours[1]:.4f} | {ase[0]:.4f}, {ase[1]:.4f} "
                    f"{ase[0] / ours[0]:.2f}x")
            if aenet is not None:
                line += f" | {aenet[0]:.4f}, {aenet[1]:.4f} {aenet[0] / ours[0]:.2f}x"
            print(line + f"   (load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
