#!/usr/bin/env python
"""Generate PyITA's bundled TiO2 sample data (GFN1-xTB labels, not DFT) reproducibly from a seed.

Two sets are written to ``pyita/data/`` as gzip-compressed extended XYZ (energies in eV, forces in eV/Å):

``tio2-diverse``
    Rutile, anatase and brookite cells of 12–48 atoms, randomly strained (normal ±4 %, shear ±2 %),
    rattled (Gaussian σ 0.02–0.12 Å) and some with one or two O vacancies (Ti8O15, Ti8O14, …). Diverse
    like the real DFT TiO2 set: the regime where Taylor augmentation of energies adds little.
``tio2-md``
    Langevin-MD snapshots of one 48-atom rutile cell at 400 K: energies spread over a few meV/atom, the
    regime where force information should pay.

k-point sampling
    tblite evaluates periodic systems at the Γ point only (no k-points), and for TiO2 the Γ-only energy per
    atom depends strongly on the supercell: ideal rutile is −97.81 eV/atom as a 12-atom 1×1×2 cell, −98.66
    as a 24-atom 2×2×1 cell and −97.96 as a 48-atom 2×2×2 cell. Mixing such cells would give labels no
    local potential can fit. Every structure is therefore labelled through a fixed *reference supercell*
    per phase (rutile 2×2×2 and anatase 2×2×1 conventional cells, 48 atoms; brookite 1×1×1, 24 atoms): a
    stored cell is replicated ("fold") to that supercell, its energy is E(supercell)/n_images and its
    forces the image-averaged supercell forces. That is exactly a Γ-centred k-mesh for the stored cell,
    the same mesh for every cell of one phase, so within a phase the labels form one consistent potential
    energy surface and the forces are the exact derivatives of the energies. The meshes are not
    converged: phase energy differences are not physical (see the summary this script prints).

Every random choice derives from ``--seed`` (structure i of the diverse set uses
``numpy.random.default_rng([seed, i])``, so it does not depend on how many structures are made).

Usage (from the project root; about 7 + 9 minutes of CPU on one core)::

    python scripts/make_sample_data.py --seed 0            # both sets, one after the other
    python scripts/make_sample_data.py --sets diverse      # or one set per process
    python scripts/make_sample_data.py --quick --out /tmp/x  # a few structures, to time things
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, and deterministic reductions

import numpy as np  # noqa: E402

log = logging.getLogger("make_sample_data")

METHOD = "GFN1-xTB"
ELECTRONIC_TEMPERATURE = 300.0  # K, tblite's default
ACCURACY = 1.0  # tblite's default
MAX_FORCE = 25.0  # eV/Å; anything above is discarded as broken (none expected)
GENERATOR = "scripts/make_sample_data.py"

#: Conventional cells from standard crystallographic data.
#: ``reference`` is the supercell (in conventional cells) through which every structure of the phase is
#: labelled; ``repeats`` are the stored cells, each a divisor of the reference so that it folds into it.
PHASES = {
    "rutile": dict(  # P4_2/mnm, Ti 2a (0,0,0), O 4f (x,x,0)
        symbols=["Ti", "O"], basis=[(0.0, 0.0, 0.0), (0.305, 0.305, 0.0)], spacegroup=136, setting=1,
        cellpar=[4.594, 4.594, 2.959, 90, 90, 90], reference=(2, 2, 2),
        repeats=[(1, 1, 2), (2, 1, 1), (1, 2, 1), (2, 2, 1), (2, 1, 2), (1, 2, 2), (2, 2, 2)],
    ),
    "anatase": dict(  # I4_1/amd, origin choice 1 (ASE setting 1): Ti 4a (0,0,0), O 8e (0,0,z)
        symbols=["Ti", "O"], basis=[(0.0, 0.0, 0.0), (0.0, 0.0, 0.2083)], spacegroup=141, setting=1,
        cellpar=[3.785, 3.785, 9.514, 90, 90, 90], reference=(2, 2, 1),
        repeats=[(1, 1, 1), (2, 1, 1), (1, 2, 1), (2, 2, 1)],
    ),
    "brookite": dict(  # Pbca, all atoms on 8c (Meagher & Lager 1979)
        symbols=["Ti", "O", "O"],
        basis=[(0.1289, 0.0972, 0.8628), (0.0101, 0.1486, 0.1824), (0.2304, 0.1130, 0.5371)],
        spacegroup=61, setting=1, cellpar=[9.184, 5.447, 5.145, 90, 90, 90], reference=(1, 1, 1),
        repeats=[(1, 1, 1)],
    ),
}
PHASE_WEIGHTS = {"rutile": 0.4, "anatase": 0.4, "brookite": 0.2}

# Diverse-set design.
NORMAL_STRAIN = 0.04  # uniform in ±4 % on each diagonal component of the strain tensor
SHEAR_STRAIN = 0.02  # uniform in ±2 % on each off-diagonal component (symmetric tensor)
RATTLE_RANGE = (0.02, 0.12)  # Å, Gaussian σ per Cartesian component, drawn uniformly per structure
P_ONE_VACANCY = 0.15
P_TWO_VACANCIES = 0.05  # only in cells of 24 atoms or more

# MD-set design.
MD_PHASE, MD_REPEAT = "rutile", (2, 2, 2)
MD_TEMPERATURE = 400.0  # K
MD_TIMESTEP = 2.5  # fs
MD_FRICTION = 0.02  # 1/fs
# steps discarded: 125 fs, about 2.5 friction times (the first run showed a transient to ~step 50)
MD_EQUILIBRATION = 50
MD_INTERVAL = 1  # steps between stored snapshots


def _fmt(rep) -> str:
    return "x".join(str(int(r)) for r in rep)


def conventional_cell(phase: str):
    """The ideal conventional cell of a phase at the standard lattice parameters."""
    from ase.spacegroup import crystal

    from ase import Atoms

    p = PHASES[phase]
    atoms = crystal(p["symbols"], basis=p["basis"], spacegroup=p["spacegroup"], setting=p["setting"],
                    cellpar=p["cellpar"], primitive_cell=False)
    return Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=True)


def fold_for(phase: str, repeat) -> tuple[int, int, int]:
    """Replication that turns a stored cell of ``repeat`` conventional cells into the reference supercell."""
    ref = PHASES[phase]["reference"]
    if any(r % s for r, s in zip(ref, repeat)):
        raise ValueError(f"{phase} {_fmt(repeat)} does not divide the reference {_fmt(ref)}")
    return tuple(r // s for r, s in zip(ref, repeat))


def _strain_tensor(rng) -> np.ndarray:
    eps = np.diag(rng.uniform(-NORMAL_STRAIN, NORMAL_STRAIN, 3))
    for i, j in ((1, 2), (0, 2), (0, 1)):
        eps[i, j] = eps[j, i] = rng.uniform(-SHEAR_STRAIN, SHEAR_STRAIN)
    return eps


def build_structures(seed: int = 0, n: int = 170) -> list:
    """The unlabelled diverse structures (``ase.Atoms`` with their design in ``info``); no xTB involved.

    Structures 0–2 are the ideal (unstrained, unrattled) largest stored cell of each phase; the rest are
    random. Structure i depends only on ``seed`` and i.
    """
    phases = list(PHASES)
    weights = np.array([PHASE_WEIGHTS[p] for p in phases])
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        if i < len(phases):
            phase, repeat = phases[i], PHASES[phases[i]]["repeats"][-1]
            eps, sigma, n_vac = np.zeros((3, 3)), 0.0, 0
        else:
            phase = phases[rng.choice(len(phases), p=weights / weights.sum())]
            repeats = PHASES[phase]["repeats"]
            sizes = sorted({int(np.prod(r)) for r in repeats})
            size = sizes[rng.integers(len(sizes))]  # each size equally likely, then each shape of it
            shapes = [r for r in repeats if int(np.prod(r)) == size]
            repeat = shapes[rng.integers(len(shapes))]
            eps = _strain_tensor(rng)
            sigma = float(rng.uniform(*RATTLE_RANGE))
            u = rng.uniform()
            n_vac = 0
            if u < P_ONE_VACANCY:
                n_vac = 1
            elif u < P_ONE_VACANCY + P_TWO_VACANCIES:
                n_vac = 2
        atoms = conventional_cell(phase).repeat(repeat)
        if n_vac == 2 and len(atoms) < 24:
            n_vac = 1
        if n_vac:
            oxygens = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == "O")
            del atoms[sorted(rng.choice(oxygens, size=n_vac, replace=False).tolist())]
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
        if sigma:
            atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
        atoms.wrap()
        atoms.info.update({
            "set": "tio2-diverse", "index": i, "seed": seed, "phase": phase, "supercell": _fmt(repeat),
            "fold": _fmt(fold_for(phase, repeat)), "label_supercell": _fmt(PHASES[phase]["reference"]),
            "strain_voigt": np.array([eps[0, 0], eps[1, 1], eps[2, 2], eps[1, 2], eps[0, 2], eps[0, 1]]),
            "rattle_sigma": sigma, "n_vacancies": n_vac,
        })
        out.append(atoms)
    return out


def md_cell():
    """The ideal MD cell (48-atom rutile, the rutile reference supercell itself: fold 1x1x1)."""
    atoms = conventional_cell(MD_PHASE).repeat(MD_REPEAT)
    assert fold_for(MD_PHASE, MD_REPEAT) == (1, 1, 1)
    return atoms


def new_calculator():
    from tblite.ase import TBLite

    return TBLite(method=METHOD, verbosity=0, accuracy=ACCURACY, electronic_temperature=ELECTRONIC_TEMPERATURE)


def xtb_label(atoms, fold=(1, 1, 1), calc=None) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) of ``atoms`` with its k-mesh given by ``fold``.

    The replicated supercell is evaluated at Γ; the stored cell's energy is E/n_images and its forces the
    average over images (identical by symmetry up to the SCF tolerance, ~1e-4 eV/Å).
    """
    fold = tuple(int(f) for f in fold)
    m = int(np.prod(fold))
    sup = atoms.copy() if m == 1 else atoms.repeat(fold)  # image k holds atoms [k*n, (k+1)*n)
    sup.info = {}
    sup.calc = calc or new_calculator()
    energy = sup.get_potential_energy() / m
    forces = sup.get_forces().reshape(m, len(atoms), 3).mean(axis=0)
    return float(energy), forces


def _attach(atoms, energy, forces, extra: dict):
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.info.update(extra)
    out.calc = SinglePointCalculator(out, energy=energy, forces=forces)
    return out


def _provenance(seed: int) -> dict:
    return {"method": METHOD, "tblite_version": version("tblite"), "generator": GENERATOR, "seed": seed}


def write_xyz_gz(frames, path: Path) -> int:
    """Extended XYZ, gzip'd byte-reproducibly (no timestamp in the header). Returns the size in bytes."""
    import ase.io

    text = io.StringIO()
    ase.io.write(text, frames, format="extxyz")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                                 compresslevel=9) as gz:
        gz.write(text.getvalue().encode())
    return path.stat().st_size


def make_diverse(seed: int, n: int) -> tuple[list, dict]:
    frames, failed = [], []
    t0 = time.perf_counter()
    for atoms in build_structures(seed, n):
        i = atoms.info["index"]
        fold = tuple(int(x) for x in atoms.info["fold"].split("x"))
        try:
            energy, forces = xtb_label(atoms, fold)
        except Exception as exc:  # tblite raises CalculationFailed/RuntimeError, e.g. SCF not converged
            log.warning("diverse %d (%s %s): xTB failed, discarded: %s", i, atoms.info["phase"],
                        atoms.get_chemical_formula(), exc)
            failed.append(i)
            continue
        fmax = float(np.abs(forces).max())
        if not np.isfinite(energy) or not np.isfinite(forces).all() or fmax > MAX_FORCE:
            log.warning("diverse %d: energy %s, max |F| %.1f eV/Å: discarded", i, energy, fmax)
            failed.append(i)
            continue
        frames.append(_attach(atoms, energy, forces, _provenance(seed)))
        if len(frames) % 10 == 0:
            log.info("diverse: %d/%d labelled, %.0f s", len(frames), n, time.perf_counter() - t0)
    return frames, {"failed": failed, "seconds": time.perf_counter() - t0}


def make_md(seed: int, n: int, temperature: float = MD_TEMPERATURE, timestep: float = MD_TIMESTEP,
            interval: int = MD_INTERVAL, equilibration: int = MD_EQUILIBRATION) -> tuple[list, dict]:
    from ase import units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary

    try:
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:  # ASE < 3.28
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 10**6])  # a stream of its own, apart from the diverse set's
    atoms = md_cell()
    atoms.calc = new_calculator()  # reused: each SCF restarts from the previous step's density
    thermalize_momenta(atoms, temperature_K=2 * temperature, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())
    dyn = Langevin(atoms, timestep=timestep * units.fs, temperature_K=temperature,
                   friction=MD_FRICTION / units.fs, fixcm=False, rng=rng)
    frames, failed = [], []
    meta = {"set": "tio2-md", "phase": MD_PHASE, "supercell": _fmt(MD_REPEAT), "fold": "1x1x1",
            "label_supercell": _fmt(PHASES[MD_PHASE]["reference"]), "md_temperature_K": temperature,
            "md_timestep_fs": timestep, "md_friction_per_fs": MD_FRICTION, **_provenance(seed)}
    step = 0
    while len(frames) < n:
        try:
            dyn.run(equilibration if step == 0 else interval)
        except Exception as exc:  # an SCF failure mid-trajectory: log it and stop with what we have
            log.warning("md: xTB failed near step %d, trajectory stopped: %s", step, exc)
            failed.append(step)
            break
        step += equilibration if step == 0 else interval
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces(apply_constraint=False)  # raw xTB forces (their sum is ~1e-14 anyway)
        snap = atoms.copy()
        snap.set_constraint()
        snap.arrays.pop("momenta", None)
        frames.append(_attach(snap, energy, forces, {
            **meta, "index": len(frames), "md_step": step, "time_fs": step * timestep,
            "kinetic_temperature_K": float(atoms.get_temperature())}))
        if len(frames) % 20 == 0:
            log.info("md: %d/%d snapshots, step %d, T %.0f K, %.0f s", len(frames), n, step,
                     atoms.get_temperature(), time.perf_counter() - t0)
    return frames, {"failed": failed, "seconds": time.perf_counter() - t0}


def phase_check() -> list[str]:
    """A markdown table: ideal cells at the standard lattice parameters, and the Γ-only artefact."""
    from ase import units

    rows = ["| phase | label supercell | atoms | E/atom (eV) | vs rutile (meV/atom) | max abs F (eV/Å) "
            "| pressure (GPa) | smallest cell at Γ only: atoms, E/atom (eV) |",
            "|---|---|---|---|---|---|---|---|"]
    e_rutile = None
    for phase, p in PHASES.items():
        sup = conventional_cell(phase).repeat(p["reference"])
        sup.calc = new_calculator()
        e = sup.get_potential_energy() / len(sup)
        fmax = np.abs(sup.get_forces()).max()
        pressure = -np.trace(sup.get_stress(voigt=False)) / 3 / units.GPa
        e_rutile = e if e_rutile is None else e_rutile
        small = conventional_cell(phase).repeat(p["repeats"][0])
        small.calc = new_calculator()
        e_small = small.get_potential_energy() / len(small)
        rows.append(f"| {phase} | {_fmt(p['reference'])} | {len(sup)} | {e:.4f} | {1000 * (e - e_rutile):+.1f} "
                    f"| {fmax:.3f} | {pressure:+.2f} | {len(small)}, {e_small:.4f} |")
    return rows


def set_summary(name: str, frames: list, info: dict, size: int | None) -> list[str]:
    from collections import Counter

    e = np.array([f.get_potential_energy() / len(f) for f in frames])
    fmax = np.array([np.abs(f.get_forces()).max() for f in frames])
    comps = np.concatenate([f.get_forces().ravel() for f in frames])
    formulas = Counter(f.get_chemical_formula(mode="metal") for f in frames)
    natoms = [len(f) for f in frames]
    lines = [f"### {name}",
             f"- structures: {len(frames)} ({len(info['failed'])} discarded: {info['failed']}), "
             f"{sum(natoms)} atoms, {min(natoms)}–{max(natoms)} per cell",
             "- compositions: " + ", ".join(f"{k} {v}" for k, v in formulas.most_common()),
             f"- energy per atom: {e.min():.4f} … {e.max():.4f} eV (range {1000 * np.ptp(e):.1f} meV, "
             f"std {1000 * e.std():.1f} meV)",
             f"- forces: max |F_i,α| {fmax.max():.3f} eV/Å (median per structure {np.median(fmax):.3f}), "
             f"RMS component {np.sqrt(np.mean(comps ** 2)):.3f} eV/Å",
             f"- labelling time: {info['seconds']:.0f} s" + (f"; file {size / 1024:.0f} KiB" if size else "")]
    if name == "tio2-diverse":
        for phase in PHASES:
            sel = [k for k, f in enumerate(frames) if f.info["phase"] == phase]
            if sel:
                lines.append(f"  - {phase}: {len(sel)} structures, E/atom {e[sel].min():.4f} … {e[sel].max():.4f} eV")
    if name == "tio2-md":
        temps = [f.info["kinetic_temperature_K"] for f in frames]
        lines.append(f"  - kinetic temperature {np.mean(temps):.0f} ± {np.std(temps):.0f} K, "
                     f"steps {frames[0].info['md_step']}…{frames[-1].info['md_step']}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", nargs="+", choices=["diverse", "md"], default=["diverse", "md"])
    ap.add_argument("--n-diverse", type=int, default=170)
    ap.add_argument("--n-md", type=int, default=150)
    ap.add_argument("--md-temperature", type=float, default=MD_TEMPERATURE)
    ap.add_argument("--md-timestep", type=float, default=MD_TIMESTEP, help="fs")
    ap.add_argument("--md-interval", type=int, default=MD_INTERVAL, help="MD steps between snapshots")
    ap.add_argument("--md-equilibration", type=int, default=MD_EQUILIBRATION)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "pyita" / "data")
    ap.add_argument("--quick", action="store_true", help="5 structures per set, to time things")
    ap.add_argument("--no-phase-check", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.quick:
        args.n_diverse = args.n_md = 5
    log.info("tblite %s, %s, seed %d, OMP_NUM_THREADS=%s", version("tblite"), METHOD, args.seed,
             os.environ.get("OMP_NUM_THREADS"))

    report = [f"Generated by `{GENERATOR} --seed {args.seed}` with tblite {version('tblite')} ({METHOD}, "
              f"electronic temperature {ELECTRONIC_TEMPERATURE} K, accuracy {ACCURACY}), ASE {version('ase')}, "
              f"numpy {version('numpy')}.", ""]
    if not args.no_phase_check:
        report += ["Ideal cells at the standard lattice parameters:", "", *phase_check(), ""]
    if "diverse" in args.sets:
        frames, info = make_diverse(args.seed, args.n_diverse)
        size = write_xyz_gz(frames, args.out / "tio2-diverse.xyz.gz")
        report += set_summary("tio2-diverse", frames, info, size) + [""]
    if "md" in args.sets:
        frames, info = make_md(args.seed, args.n_md, args.md_temperature, args.md_timestep,
                               args.md_interval, args.md_equilibration)
        size = write_xyz_gz(frames, args.out / "tio2-md.xyz.gz")
        report += set_summary("tio2-md", frames, info, size) + [""]
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
