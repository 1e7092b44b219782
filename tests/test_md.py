"""``pyita md``: the batched integrators against ASE's own, failure detection on a potential built to collapse,
the reference errors against a direct recomputation, and a run killed outright and resumed against one that
was not interrupted."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list

from faults import cli_command, cli_env, error_line, run_cli
from pyita.calculator import PyitaCalculator
from pyita.descriptors import ChebyshevDescriptor
from pyita.errors import PyitaError, SettingError
from pyita.md import MDSettings, run_md
from pyita.md.engine import Engine
from pyita.md.evaluate import BATCH_ATOMS, Evaluation, evaluate, evaluate_batch, shortest_distances
from pyita.md.failure import distance_thresholds, find_failure
from pyita.md.run import make_runs, start_indices
from pyita.model import Potential
from pyita.structure import Structure
from trainer_data import SMALL_DESCRIPTOR

THREADS = torch.get_num_threads()


def cu_cells(n: int = 2) -> list[Structure]:
    """Rattled 16-atom fcc Cu cells with one Au atom each (species EMT knows)."""
    cells = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 1))
        atoms[3 + 5 * k].symbol = "Au"
        atoms.rattle(0.05, seed=k)
        cells.append(Structure.from_ase(atoms, source=f"cu-{k}"))
    return cells


def smooth_potential(scale: float = 0.3) -> Potential:
    """Random weights, tanh layers: smooth random forces of a few tenths of an eV/Å."""
    potential = Potential(ChebyshevDescriptor(("Cu", "Au"), **SMALL_DESCRIPTOR), "6:tanh,5:tanh",
                          {"Cu": -1.5, "Au": -2.0}, seed=3)
    with torch.no_grad():
        potential.energy_scale.fill_(scale)
    return potential


def pair_potential(strength: float) -> Potential:
    """E = strength × Σ_i Σ_j f_c(r_ij) within 3 Å (the first radial feature, no hidden layer). Positive: every
    neighbour pushes, a stiff cage (f_c is convex at the fcc neighbour distance), a stable crystal. Negative:
    every pair attracts, and the crystal pulls itself together until atoms collide."""
    descriptor = ChebyshevDescriptor(("Cu", "Au"), radial_rc=3.0, radial_n=2, angular_rc=3.0, angular_n=1)
    potential = Potential(descriptor, "", {"Cu": -1.5, "Au": -2.0})
    with torch.no_grad():
        for net in potential.networks.nets:
            net[0].weight.zero_()
            net[0].bias.zero_()
            net[0].weight[0, 0] = strength
    return potential


def simulate(potential, structures, settings, folder: Path, chosen=None):
    """The engine alone, returning its runs in memory (full precision)."""
    runs = make_runs(structures, chosen or list(range(len(structures))), settings, "test")
    shortest = shortest_distances(structures, potential.species, potential.descriptor.cutoff)
    folder.mkdir()
    Engine(potential, runs, settings, distance_thresholds(shortest, settings.min_distance_fraction), folder,
           {}).simulate(progress=False)
    return runs


def ase_start(potential, structure: Structure, temperature: float, seed) -> tuple:
    atoms = structure.to_ase()
    atoms.calc = PyitaCalculator(potential)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    return atoms, rng


@pytest.mark.parametrize("changes, words", [
    ({"temperature": -1}, "--temperature"), ({"temperature": float("nan")}, "--temperature"),
    ({"steps": 0}, "--steps"), ({"timestep": 0}, "--timestep"), ({"timestep": 11}, "--timestep"),
    ({"ensemble": "npt"}, "--ensemble"), ({"replicas": 0}, "--replicas"), ({"write_every": 1.5}, "--write-every"),
    ({"min_distance_fraction": 1.2}, "--min-distance-fraction"), ({"max_drift": 0}, "--max-drift"),
    ({"seed": -1}, "--seed"), ({"starts": 0}, "--starts")])
def test_settings_refuse_what_no_run_can_use(changes, words):
    with pytest.raises(SettingError, match=words):
        MDSettings(**changes)


def test_nve_equals_ase_velocity_verlet_and_the_batch_changes_nothing(tmp_path):
    potential, cells = smooth_potential(), cu_cells(2)
    settings = MDSettings(ensemble="nve", temperature=400, steps=20, timestep=2.0, write_every=5, replicas=2)
    runs = simulate(potential, cells, settings, tmp_path / "batch")
    for run in runs:
        atoms, _ = ase_start(potential, cells[run.start], 400, [0, run.start, run.replica])
        VelocityVerlet(atoms, timestep=2.0 * units.fs).run(20)
        assert np.abs(run.positions - atoms.positions).max() < 1e-10
        assert np.abs(run.momenta - atoms.get_momenta()).max() < 1e-10
        assert run.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
    frames = ase.io.read(tmp_path / "batch" / "trajectories" / f"{runs[3].name}.extxyz", ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    assert np.abs(frames[-1].positions - runs[3].positions).max() < 1e-7   # as written: 8 decimals
    assert frames[-1].get_potential_energy() == runs[3].energy
    alone = simulate(potential, cells, settings, tmp_path / "alone", chosen=[1])
    assert alone[1].name == runs[3].name
    assert np.abs(alone[1].positions - runs[3].positions).max() < 1e-12   # its batch mates change nothing


def test_many_structures_are_evaluated_in_chunks_as_each_alone():
    potential, cells = smooth_potential(), cu_cells(2)
    many = cells * (BATCH_ATOMS // 16 // 2 + 3)   # more atoms than one call takes
    together, alone = evaluate(potential, many), [evaluate_batch(potential, [c])[0] for c in cells]
    for k, ev in enumerate(together):
        assert ev.energy == pytest.approx(alone[k % 2].energy, abs=1e-10)
        assert np.abs(ev.forces - alone[k % 2].forces).max() < 1e-10
        assert np.array_equal(ev.nearest, alone[k % 2].nearest) and np.array_equal(ev.shortest, alone[k % 2].shortest)


def test_langevin_equals_ase_baoab_step_for_step(tmp_path):
    potential, cells = smooth_potential(), cu_cells(1)
    settings = MDSettings(ensemble="nvt", temperature=300, steps=20, friction=0.02, write_every=20)
    run, = simulate(potential, cells, settings, tmp_path / "md")
    atoms, rng = ase_start(potential, cells[0], 300, [0, 0, 0])
    LangevinBAOAB(atoms, timestep=units.fs, temperature_K=300, T_tau=50 * units.fs, rng=rng).run(20)
    assert np.abs(run.positions - atoms.positions).max() < 1e-10
    assert np.abs(run.momenta - atoms.get_momenta()).max() < 1e-10
    # the thermostat's work is booked: E_pot + E_kin − heat is conserved to the integration error
    assert abs(run.drift) < 0.05 and run.heat != 0


def test_langevin_holds_the_target_temperature(tmp_path):
    settings = MDSettings(ensemble="nvt", temperature=500, steps=400, friction=0.05, write_every=400, replicas=4)
    runs = simulate(pair_potential(2.0), cu_cells(1), settings, tmp_path / "md")
    assert all(run.running for run in runs)
    # 16 atoms: T fluctuates by ~20 % per step; 4 × 360 steps with a 10 fs correlation time: ±2 % standard error
    assert np.mean([run.mean_temperature for run in runs]) == pytest.approx(500, rel=0.1)


def pair_minima(atoms, species, cutoff: float = 3.0) -> dict[str, float]:
    """Shortest distance of every species pair within ``cutoff`` (periodic images included), computed with
    ASE's neighbour list."""
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    symbols = np.array(atoms.get_chemical_symbols())
    return {"_".join(sorted((a, b))): float(d[(symbols[i] == a) & (symbols[j] == b)].min(initial=np.inf))
            for k, a in enumerate(species) for b in species[k:]}


def test_a_collapse_is_caught_at_the_step_it_happens(tmp_path):
    cells = cu_cells(2)
    settings = MDSettings(ensemble="nve", temperature=300, steps=300, write_every=1, replicas=2,
                          max_temperature_factor=100)
    summary = run_md(pair_potential(-0.5), cells, tmp_path / "out", settings, progress=False)
    species = ("Au", "Cu")
    start = [pair_minima(c.to_ase(), species) for c in cells]
    shortest = {p: min(s[p] for s in start) for p in start[0]}
    limits = {p: max(0.75 * d, 0.5) if np.isfinite(d) else 0.5 for p, d in shortest.items()}   # Au_Au: > 3 Å
    assert limits["Au_Au"] == 0.5 and limits["Cu_Cu"] > 1.7
    assert summary["min_distance_threshold_A"] == pytest.approx(limits, abs=1e-9)
    assert summary["totals"]["stable"] == 0 and summary["totals"]["failures"] == {"min_distance": 4}
    for record in summary["runs"]:
        frames = ase.io.read(tmp_path / "out" / record["trajectory"], ":")
        minima = [pair_minima(f, species) for f in frames]
        assert all(m[p] >= limits[p] - 1e-7 for m in minima[:-1] for p in limits)   # written with 8 decimals
        assert any(minima[-1][p] < limits[p] for p in limits)
        assert frames[-1].info["time_fs"] == record["time_to_failure_fs"] == record["simulated_fs"] < 300
        assert len(frames) == frames[-1].info["step"] + 1
        with open(tmp_path / "out" / record["log"]) as handle:
            log = list(csv.DictReader(handle))
        assert float(log[-1]["time_fs"]) == record["time_to_failure_fs"]
        assert log[-1]["dmin_Au_Au"] == ""   # none within the cutoff: an empty cell, not "inf"
        assert min(float(log[-1][f"dmin_{p}"]) - limits[p] for p in ("Au_Cu", "Cu_Cu")) < 0


def test_failure_criteria_in_order():
    settings = MDSettings(ensemble="nve", temperature=300, max_drift=10)
    thresholds = np.array([1.0, 1.5, 2.0])
    pairs = ["Au_Au", "Au_Cu", "Cu_Cu"]

    def state(shortest=(3, 3, 3), nearest=(2.5, 2.5), energy=-1.0, temperature=300, settled=None, drift=0.0):
        ev = Evaluation(energy, np.zeros((2, 3)), np.array(shortest, float), np.array(nearest, float))
        return find_failure(settings, ev, pairs=pairs, thresholds=thresholds, start_nearest=np.array([2.5, 2.0]),
                            temperature=temperature, settled_mean=settled, drift=drift)

    assert state() is None
    assert state(energy=float("nan"))[0] == "non_finite"
    assert state(shortest=(3, 1.4, 1.9))[0] == "min_distance" and "Au–Cu" in state(shortest=(3, 1.4, 3))[1]
    assert state(nearest=(2.5, 3.01))[0] == "bond_stretch" and state(nearest=(2.5, 2.99)) is None
    assert state(nearest=(np.inf, 2.0))[1].startswith("atom 1's nearest neighbour at beyond the cutoff")
    assert state(temperature=1600, settled=200)[0] == "temperature"          # 5 × the 300 K target
    assert state(temperature=1600, settled=400) is None                      # 5 × the hotter start
    assert state(temperature=1600) is None                                   # still within the first 10 %
    assert state(drift=-10.5)[0] == "drift" and state(drift=9.9) is None
    nvt = MDSettings(ensemble="nvt")
    assert find_failure(nvt, Evaluation(-1.0, np.zeros((2, 3)), np.full(3, 3.0), np.full(2, 2.5)), pairs=pairs,
                        thresholds=thresholds, start_nearest=np.full(2, 2.5), temperature=300, settled_mean=None,
                        drift=50.0) is None                                  # drift counts in NVE only
    assert distance_thresholds(np.array([2.0, np.inf, 0.4]), 0.75).tolist() == [1.5, 0.5, 0.5]


def test_starts_spread_evenly_and_seeds_follow_the_start():
    assert start_indices(150, 4) == [0, 50, 99, 149] and start_indices(3, 10) == [0, 1, 2]
    assert start_indices(5, None) == [0, 1, 2, 3, 4]
    cells = cu_cells(2)
    runs = make_runs(cells, [1], MDSettings(replicas=2, seed=7), "x")
    assert [(r.name, r.seed) for r in runs] == [("s001-r00", [7, 1, 0]), ("s001-r01", [7, 1, 1])]
    again = make_runs(cells, [0, 1], MDSettings(replicas=2, seed=7), "x")[2]   # the same run among others
    assert np.array_equal(again.momenta, runs[0].momenta) and not np.array_equal(runs[0].momenta, runs[1].momenta)


def test_a_stable_run_and_its_outputs(tmp_path):
    settings = MDSettings(ensemble="nve", temperature=300, steps=40, timestep=1.0, write_every=10)
    summary = run_md(pair_potential(2.0), cu_cells(2), tmp_path / "out", settings, progress=False)
    out = tmp_path / "out"
    assert summary["totals"] == {"runs": 2, "stable": 2, "fraction_stable": 1.0, "median_time_to_failure_fs": 40.0,
                                 "run_length_fs": 40.0, "failures": {}}
    stored = json.loads((out / "summary.json").read_text())
    assert stored["command"] == "md" and stored["settings"] == settings.as_dict()
    assert sorted(stored["files"]) == sorted(["runs.csv", "logs", "trajectories", "logs/s000-r00.csv",
                                              "logs/s001-r00.csv", "trajectories/s000-r00.extxyz",
                                              "trajectories/s001-r00.extxyz"])
    for record in stored["runs"]:
        assert record["stable"] and record["time_to_failure_fs"] is None and record["failure"] is None
        assert abs(record["max_abs_drift_meV_per_atom"]) < 1.0
        with open(out / record["log"]) as handle:
            log = list(csv.DictReader(handle))
        assert [int(r["step"]) for r in log] == [0, 10, 20, 30, 40]
        assert list(log[0]) == ["step", "time_fs", "potential_energy_eV", "kinetic_energy_eV", "total_energy_eV",
                                "temperature_K", "drift_meV_per_atom", "dmin_Au_Au", "dmin_Au_Cu", "dmin_Cu_Cu",
                                "max_nn_stretch",
                                "max_displacement_A"]
        row = log[-1]
        assert float(row["total_energy_eV"]) == pytest.approx(float(row["potential_energy_eV"])
                                                                + float(row["kinetic_energy_eV"]), abs=1e-12)
        assert float(row["drift_meV_per_atom"]) == pytest.approx(
            (float(row["total_energy_eV"]) - float(log[0]["total_energy_eV"])) * 1000 / 16, abs=1e-9)
    with open(out / "runs.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == ["s000-r00", "s001-r00"] and all(r["stable"] == "True" for r in rows)
    with pytest.raises(PyitaError, match="not empty"):
        run_md(pair_potential(2.0), cu_cells(2), out, settings, progress=False)


def test_reference_errors_equal_a_direct_recomputation(tmp_path):
    settings = MDSettings(ensemble="nvt", temperature=300, steps=12, write_every=3, reference_every=2)
    summary = run_md(smooth_potential(), cu_cells(2), tmp_path / "out", settings, reference="emt", progress=False)
    with open(tmp_path / "out" / "reference.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["run"], int(r["step"])) for r in rows] == [(n, s) for n in ("s000-r00", "s001-r00") for s in (0, 6, 12)]
    for record in summary["runs"]:
        frames = ase.io.read(tmp_path / "out" / record["trajectory"], ":")[::2]
        energy_errors, force_errors = [], []
        for frame, row in zip(frames, [r for r in rows if r["run"] == record["run"]]):
            model_energy, model_forces = frame.get_potential_energy(), frame.get_forces()
            frame.calc = EMT()
            energy_errors.append((model_energy - frame.get_potential_energy()) * 1000 / len(frame))
            force_errors.append(np.abs(model_forces - frame.get_forces()).mean())
            assert float(row["energy_error_meV_per_atom"]) == pytest.approx(energy_errors[-1], rel=1e-12)
            assert float(row["force_mae_eV_per_A"]) == pytest.approx(force_errors[-1], rel=1e-12)
        errors = record["reference"]
        assert errors["frames"] == 3 and errors["reference_failed"] == 0
        assert errors["energy_mae_meV_per_atom"] == pytest.approx(np.mean(np.abs(energy_errors)), rel=1e-12)
        assert errors["force_mae_eV_per_A"] == pytest.approx(np.mean(force_errors), rel=1e-12)
        assert errors["last"]["step"] == 12


def md_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def wait_for(condition, process, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while not condition() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)


def test_a_run_killed_and_resumed_writes_what_an_uninterrupted_one_does(tmp_path, monkeypatch):
    """SIGKILL (nothing saved but the last checkpoint), then SIGTERM of the resumed run (a checkpoint of the
    step it stopped after), then the rest: the same files as one run without a break."""
    pair_potential(2.0).save(tmp_path / "model.pt")
    ase.io.write(tmp_path / "cells.extxyz", [c.to_ase() for c in cu_cells(2)])
    settings = MDSettings(steps=300, write_every=10, replicas=2)
    args = ["md", "model.pt", "cells.extxyz", "--steps", "300", "--write-every", "10", "--checkpoint-every", "25",
            "--replicas", "2", "-q", "--out", "cut"]
    state = tmp_path / "cut.partial" / "state.npz"
    process = subprocess.Popen(cli_command(*args), cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_for(state.exists, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut").exists() and state.exists(), "the run ended before it could be killed"
    with pytest.raises(PyitaError, match="cut.partial exists: the checkpoint of an interrupted run. --resume"):
        run_md(tmp_path / "model.pt", str(tmp_path / "cells.extxyz"), tmp_path / "cut", settings, progress=False)
    killed_at = state.stat().st_mtime_ns
    process = subprocess.Popen(cli_command(*args, "--resume"), cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for(lambda: state.stat().st_mtime_ns != killed_at, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate()
    assert process.returncode == 128 + signal.SIGTERM and not (tmp_path / "cut").exists(), stderr
    assert "md stopped after step" in stderr and "--resume continues it" in stderr
    resumed = run_cli(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert not (tmp_path / "cut.partial").exists()
    monkeypatch.chdir(tmp_path)   # the same data argument, so the same source names
    torch.set_num_threads(1)   # as the command line ran (OMP_NUM_THREADS=1)
    try:
        run_md("model.pt", "cells.extxyz", "whole", settings, progress=False)
    finally:
        torch.set_num_threads(THREADS)
    cut, whole = md_files(tmp_path / "cut"), md_files(tmp_path / "whole")
    first, second = (json.loads(files.pop("summary.json")) for files in (cut, whole))
    assert cut == whole and cut["trajectories/s000-r01.extxyz"].count(b"Lattice") == 31
    assert first["resumed_from_step"] > 25 and second["resumed_from_step"] == 0
    for summary in (first, second):
        del summary["seconds"], summary["resumed_from_step"]
    assert first == second


def test_cli_refuses_bad_settings_and_foreign_output_before_writing(tmp_path):
    smooth_potential().save(tmp_path / "model.pt")
    result = run_cli("md", "model.pt", "sample:tio2-md", "--timestep", "20", "--out", "o", cwd=tmp_path)
    error_line(result, "--timestep", "10 fs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    with pytest.raises(PyitaError, match="species"):
        run_md(tmp_path / "model.pt", "sample:tio2-md", tmp_path / "o", MDSettings(steps=1), progress=False)
    (tmp_path / "o.partial").mkdir()
    (tmp_path / "o.partial" / "mine.txt").write_text("not pyita's")
    with pytest.raises(PyitaError, match="not a checkpoint folder of `pyita md`"):
        run_md(tmp_path / "model.pt", cu_cells(1), tmp_path / "o", MDSettings(steps=1), progress=False,
               overwrite=True)
    assert (tmp_path / "o.partial" / "mine.txt").read_text() == "not pyita's"
    ase.io.write(tmp_path / "cells.extxyz", [c.to_ase() for c in cu_cells(1)])
    before = (tmp_path / "cells.extxyz").read_bytes()
    with pytest.raises(PyitaError, match="is the input file"):
        run_md(tmp_path / "model.pt", str(tmp_path / "cells.extxyz"), tmp_path / "cells.extxyz", MDSettings(steps=1),
               progress=False, overwrite=True)
    assert (tmp_path / "cells.extxyz").read_bytes() == before
