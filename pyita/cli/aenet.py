"""``pyita aenet …``: drive aenet 2.0.4's own programs (prepare a run folder, run it, export a model)."""

from __future__ import annotations

from pathlib import Path

import typer

from pyita.cli.app import (ANGULAR_N, ANGULAR_RC, LOG_FILE, QUIET, RADIAL_N, RADIAL_RC, TYPES_OPTION, VERBOSE,
                           AenetDescriptor, AenetMethod, app, chebyshev_setup, console)
from pyita.errors import PyitaError
from pyita.progress import sig


aenet_app = typer.Typer(name="aenet", no_args_is_help=True,
                        help="Drive aenet (generate.x → train.x → predict.x): write run folders, run them, read "
                             "their results.")
app.add_typer(aenet_app, name="aenet")


@aenet_app.command("prepare")
def aenet_prepare(
    data: str = typer.Argument(..., help="generate.in (also the augmented one of `pyita augment`), XSF folder "
                                         "or glob (quoted), ASE file, or 'sample[:name]'."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (must be new or empty)."),
    test_parents: Path | None = typer.Option(None, "--test-parents",
                                             help="File naming the test parents, one per line (held out "
                                                  "with all their derived structures)."),
    test_fraction: float = typer.Option(0.1, help="Without --test-parents: fraction of the original structures "
                                                  "held out as test parents (0: none)."),
    seed: int = typer.Option(0, help="Seed for choosing the test parents."),
    types: str | None = TYPES_OPTION,
    descriptor: AenetDescriptor = typer.Option("chebyshev", help="Descriptor: chebyshev (aenet's TiO2 example "
                                                                 "settings) or behler (Behler2011)."),
    radial_rc: float = RADIAL_RC,
    radial_n: int = RADIAL_N,
    angular_rc: float = ANGULAR_RC,
    angular_n: int = ANGULAR_N,
    iterations: int = typer.Option(500, help="Epochs of train.x (its ITERATIONS)."),
    method: AenetMethod = typer.Option("bfgs", help="Training method of train.x (its METHOD; bfgs is "
                                                             "limited-memory BFGS)."),
    method_param: list[str] | None = typer.Option(None, "--method-param",
                                                  help="Method parameter key=value, repeatable (aenet's "
                                                       "names, e.g. --method-param mu=0.001)."),
    hidden: str = typer.Option("15:tanh,15:tanh", help="Hidden layers as nodes:activation, comma-separated."),
    max_energy: float | None = typer.Option(None, help="MAXENERGY in eV/atom above the reference energies; "
                                                       "PyITA applies it to the test parents too."),
    no_forces: bool = typer.Option(False, "--no-forces", help="Run predict.x without FORCES (energies only)."),
    initial_networks: Path | None = typer.Option(None, help="Folder with <Sym>.nn files train.x starts from "
                                                            "(same initial weights across runs)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty run folder (after success only)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Write a self-contained aenet run folder: generate.in, .stp files, train.in, predict.in, run.sh, xsf/."""
    from pyita.backends.aenet import AenetSettings, run_aenet_prepare
    from pyita.reference import parse_types

    params = {}
    for item in method_param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise PyitaError(f"--method-param {item!r} must be key=value")
        try:
            params[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
        except ValueError:
            raise PyitaError(f"--method-param {item!r}: value must be a number") from None
    cheb = chebyshev_setup(radial_rc, radial_n, angular_rc, angular_n)
    settings = AenetSettings(hidden=hidden, iterations=iterations, method=method, method_params=params,
                             max_energy=max_energy, descriptor=descriptor, chebyshev=cheb, forces=not no_forces,
                             initial_networks=None if initial_networks is None else str(initial_networks))
    record = run_aenet_prepare(data, out, settings, test_parents=test_parents, test_fraction=test_fraction, seed=seed,
                               types=parse_types(types), overwrite=overwrite, progress=not quiet)
    c = record["counts"]
    refs = ", ".join(f"{s} {e:.6f} eV ({record['reference_energies_origin'][s]})"
                     for s, e in record["reference_energies"].items())
    console.print(f"training: {c['train_files']} structures ({c['derived']} derived in the data); "
                  f"predict.in: {c['test_files']} {record['test_set']}; "
                  f"{c['derived_of_test_parents_dropped']} derived structures of test parents left out")
    console.print(f"reference energies: {refs}")
    if c.get("above_max_energy_train") or c.get("above_max_energy_test"):
        console.print(f"MAXENERGY: {c['above_max_energy_train']} training and {c['above_max_energy_test']} test "
                      "structures dropped")
    console.print(f"→ {out}  (run with `pyita aenet run {out}` or {out}/run.sh)  [{record['seconds']:.1f} s]")


@aenet_app.command("run")
def aenet_run(
    rundir: Path = typer.Argument(..., help="Run folder written by `pyita aenet prepare`."),
    aenet_bin: Path | None = typer.Option(None, "--aenet-bin", show_default=False,
                                          help="Folder holding generate.x, train.x and predict.x. Default: "
                                               "$AENET_BIN, then the PATH."),
    overwrite: bool = typer.Option(False, help="Replace the results of an earlier finished run in RUNDIR."),
    collect_only: bool = typer.Option(False, "--collect-only", help="Only read the outputs of a finished run "
                                                                    "(e.g. one made with run.sh)."),
    keep_epoch_networks: bool = typer.Option(True, help="Keep train.x's per-epoch network files (*.nn-00001…)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Run generate.x, train.x and predict.x; detect failures from their output; write error tables."""
    from pyita.backends.aenet import collect_results, run_aenet_run

    if collect_only:
        results = collect_results(rundir)
    else:
        results = run_aenet_run(rundir, aenet_bin=aenet_bin, overwrite=overwrite, progress=not quiet,
                                keep_epoch_networks=keep_epoch_networks)
    s = results["summary"]
    e, f = s["energy_meV_per_atom"], s["force_components_eV_per_A"]
    console.print(f"{s['test_set']}: {e['n']} structures, energy MAE {sig(e['mae'])} / RMSE {sig(e['rmse'])} / "
                  f"median {sig(e['median'])} meV/atom; force MAE {sig(f['mae'])} / RMSE {sig(f['rmse'])} eV/Å "
                  f"({f['n']} components)")
    console.print(f"tables: {rundir / 'errors-energy.csv'}, {rundir / 'errors-force.csv'}, "
                  f"{rundir / 'results.json'}")


@aenet_app.command("export")
def aenet_export(
    model: Path = typer.Argument(..., help="Model file written by `pyita train` (or a folder of .nn files)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must be new or empty)."),
    overwrite: bool = typer.Option(False, help="Replace an earlier `pyita aenet export` folder (after success "
                                               "only)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Write the model as aenet .nn networks for predict.x, LAMMPS or ASE.

    One <Sym>.<arch>.nn per species (e.g. Ti.15t-15t.nn; <Sym>.nn without hidden layers): they reproduce PyITA's
    energies and forces. List them under NETWORKS in predict.in."""
    from pyita.backends.aenet import run_aenet_export

    record = run_aenet_export(model, out, overwrite=overwrite)
    console.print(f"{', '.join(record['networks'].values())} → {out}")

