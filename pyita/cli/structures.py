"""Commands on structures: make derived ones (augment), measure the Taylor error (check), label with a
reference calculator (label), predict with a trained model (predict)."""

from __future__ import annotations

from pathlib import Path

import typer

from pyita.augment.settings import DEFAULT_CONFIG_TYPE
from pyita.cli.app import (ANGULAR_N, ANGULAR_RC, CALC_HELP, DEVICE_OPTION, ENERGY_KEY_OPTION, FOLD_OPTION,
                           FORCES_KEY_OPTION, LOG_FILE, QUIET, RADIAL_N, RADIAL_RC, THREADS_OPTION, TYPES_OPTION,
                           VERBOSE, Format, Strategy, app, ask_if_missing, chebyshev_setup, console, done)
from pyita.progress import sig

#: Options the paper's program asked for interactively: required, but asked for when a person is at the terminal.
ASKED = "Required; asked for when run at a terminal."


def given_on_command_line(ctx: typer.Context, *names: str) -> bool:
    """Whether any of these options was given (rather than left at its default). By the source's name: typer may
    bring its own copy of click, whose ParameterSource is another class than click's."""
    sources = [ctx.get_parameter_source(name) for name in names]
    return any(source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP") for source in sources)


@app.command()
def augment(
    ctx: typer.Context,
    data: str = typer.Argument(..., help="generate.in, XSF folder or glob (quoted), ASE file (extxyz…), "
                                         "or 'sample[:name]' for the bundled data."),
    a: float | None = typer.Option(None, "--a", show_default=False,
                                   help=f"New structures per parent (a × N in all). {ASKED}"),
    delta: float | None = typer.Option(None, "--delta", show_default=False,
                                       help=f"Displacement δ in Å (RMS per atom for random-all). {ASKED}"),
    out: Path = typer.Option(Path("augmented"), "--out", "-o", help="Output folder (must be new or empty)."),
    strategy: Strategy = typer.Option("balanced", help="How parents are displaced: sequential is the paper's "
                                                       "(see docs/method.md)."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    fmt: Format = typer.Option("xsf", "--format", help="Output: aenet XSF files with a generate.in, or one "
                                                       "extended-XYZ file."),
    only_derived: bool = typer.Option(False, "--only-derived",
                                      help="List only derived structures (the paper's supplementary set)."),
    exclude: Path | None = typer.Option(None, help="File listing parents never to augment (the test split)."),
    max_force: float | None = typer.Option(None, help="Skip atoms (random-all: parents) with |F| above this, in "
                                                      "eV/Å."),
    cap: float = typer.Option(3.0, help="Largest per-atom displacement for random-all, in units of δ."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    workers: int | None = typer.Option(None, show_default=False,
                                       help="Worker processes for XSF output; the output is the same for any "
                                            "number. Default: the idle cores, or $PYITA_WORKERS."),
    types: str | None = TYPES_OPTION,
    radial_rc: float = RADIAL_RC,
    radial_n: int = RADIAL_N,
    angular_rc: float = ANGULAR_RC,
    angular_n: int = ANGULAR_N,
    config_type: str | None = typer.Option(None, "--config-type", show_default=False,
                                           help="The config_type of the derived frames of --format extxyz, for "
                                                "per-type loss weights such as MACE's config_type_weights. "
                                                f"Default: {DEFAULT_CONFIG_TYPE}."),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Make Taylor-expanded structures E' = E − F·D from labelled structures.

    XSF output is an aenet training set that `generate.x generate.in` reads in the output folder: input other
    than a generate.in gets a <Sym>.stp per species (the descriptor options) and TYPES energies (--types, else
    fitted to the parents)."""
    from pyita.augment import AugmentSettings
    from pyita.augment.run import OutputOptions, run_augment
    from pyita.reference import parse_types
    from pyita.structure import LabelKeys

    a = ask_if_missing(a, "a", "New structures per parent (a)", float)
    delta = ask_if_missing(delta, "delta", "Displacement delta in Angstrom", float)
    settings = AugmentSettings(a=a, delta=delta, strategy=strategy, seed=seed, max_force=max_force, cap=cap)
    descriptor = chebyshev_setup(radial_rc, radial_n, angular_rc, angular_n) \
        if given_on_command_line(ctx, "radial_rc", "radial_n", "angular_rc", "angular_n") else None
    output = OutputOptions(fmt, config_type, descriptor, parse_types(types) or None)
    summary = run_augment(data, out, settings, only_derived=only_derived, exclude_file=exclude,
                          overwrite=overwrite, progress=not quiet, workers=workers,
                          keys=LabelKeys(energy_key, forces_key), output=output)
    c = summary["counts"]
    if "aenet" in summary:
        origin = summary["aenet"]["reference_energies_origin"]
        console.print("generate.in TYPES: " + ", ".join(f"{s} {e:.6f} eV ({origin[s]})" for s, e in
                                                        summary["aenet"]["reference_energies"].items()))
    done(f"{c['derived']} derived structures from {c['augmented_parents']} of {c['parents']} parents "
         f"({c['excluded']} excluded)", out, summary["seconds"])


@app.command()
def check(
    data: str = typer.Argument(..., help="Structures to take parents from (any DATA that augment accepts)."),
    calculator: str = typer.Option(..., "--calculator", "-c", help=CALC_HELP),
    calc_kwargs: str | None = typer.Option(None, "--calc-kwargs",
                                           help='JSON keyword arguments for the calculator, e.g. '
                                                '\'{"accuracy": 0.1}\'.'),
    delta: str = typer.Option("0.005,0.01,0.02,0.03,0.05", "--delta", help="Displacements δ to compare, in Å, "
                                                                           "comma-separated."),
    strategy: str = typer.Option("balanced,random-all", "--strategy",
                                 help="Strategies to compare, comma-separated, of sequential, balanced and "
                                      "random-all."),
    parents: int = typer.Option(20, "--parents", help="How many parents to sample (seeded)."),
    a: float = typer.Option(2, "--a", help="Derived structures per parent, for each δ and strategy."),
    seed: int = typer.Option(0, help="Seed for the parent sample and the displacements."),
    tolerance: float = typer.Option(1.0, help="Largest acceptable 95th-percentile Taylor error in meV/atom (for "
                                              "the recommended δ)."),
    max_force: float | None = typer.Option(None, help="As in augment: skip atoms with |F| above this, in eV/Å."),
    cap: float = typer.Option(3.0, help="Largest per-atom displacement for random-all, in units of δ."),
    out: Path = typer.Option(Path("check"), "--out", "-o", help="Output folder (must be new or empty)."),
    workers: int = typer.Option(1, help="Processes computing in parallel."),
    threads: int | None = THREADS_OPTION,
    fold: str = FOLD_OPTION,
    restart: bool = typer.Option(False, help="Discard the checkpoint OUT.partial/ of an earlier run."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Measure the Taylor error against a reference calculator and recommend δ.

    The first-order error |E − F·D − E(R+D)| for each δ and strategy. Writes errors.csv, check.json, check.png
    and check.svg; resumable after a failure."""
    from pyita.check import CheckSettings, print_report, run_check
    from pyita.structure import LabelKeys

    settings = CheckSettings(deltas=delta, strategies=strategy, parents=parents, a=a, seed=seed,
                             tolerance=tolerance, max_force=max_force, cap=cap)
    result = run_check(data, calculator, out, settings, calc_kwargs=calc_kwargs, workers=workers,
                       progress=not quiet, overwrite=overwrite, restart=restart, threads=threads,
                       fold=fold, keys=LabelKeys(energy_key, forces_key))
    print_report(result.summary, console)
    c = result.summary["counts"]
    done(f"{c['calculations']} calculations ({c['parents']} parents, {c['derived']} derived)", out,
         result.summary["seconds"])


@app.command()
def label(
    data: str = typer.Argument(..., help="Structures to label (any DATA that augment accepts; labels optional)."),
    calculator: str = typer.Option(..., "--calculator", "-c", help=CALC_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Output extended-XYZ file, written when complete."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    restart: bool = typer.Option(False, help="Discard the checkpoint OUT.partial of an earlier run."),
    calc_kwargs: str | None = typer.Option(None, "--calc-kwargs", help="JSON keyword arguments for the "
                                                                        "calculator."),
    workers: int = typer.Option(1, help="Processes computing in parallel."),
    threads: int | None = THREADS_OPTION,
    fold: str = FOLD_OPTION,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Compute energies and forces with a reference calculator; resumable (OUT.partial), parallel."""
    from pyita.check import run_label

    summary = run_label(data, calculator, out, calc_kwargs=calc_kwargs, workers=workers, progress=not quiet,
                        restart=restart, overwrite=overwrite, threads=threads, fold=fold)
    resumed = f" ({summary['resumed']} from the checkpoint)" if summary["resumed"] else ""
    done(f"{summary['structures']} structures labelled with {summary['calculator']['name']}{resumed}", out,
         summary["seconds"])


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file written by `pyita train`, or a folder of aenet .nn files."),
    data: list[str] = typer.Argument(..., help="Structures: generate.in, XSF folder or glob, ASE file, or "
                                               "'sample[:name]'."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder (must be new or empty)."),
    forces: bool = typer.Option(True, "--forces/--no-forces", help="Also predict forces."),
    batch_size: int = typer.Option(32, help="Structures per batch."),
    device: str = DEVICE_OPTION,
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Predict energies and forces; with reference labels, per-structure and per-component errors."""
    from pyita.predict import run_predict
    from pyita.structure import LabelKeys

    summary = run_predict(model, data, out, forces=forces, batch_size=batch_size, device=device,
                          overwrite=overwrite, progress=not quiet, keys=LabelKeys(energy_key, forces_key))
    e, f = summary["energy_meV_per_atom"], summary["force_components_eV_per_A"]
    console.print(f"{summary['structures']} structures → {out}")
    if e["n"]:
        console.print(f"energy error MAE/RMSE {sig(e['mae'])}/{sig(e['rmse'])} meV/atom over {e['n']} structures")
    if f["n"]:
        console.print(f"force error MAE/RMSE {sig(f['mae'])}/{sig(f['rmse'])} eV/Å over {f['n']} components")
    seen = summary.get("seen_in_model_data", {})
    if any(seen.values()):
        parts = " and ".join(f"{n} in its {part} set" for part, n in seen.items() if n)
        console.print(f"note: of these structures, {parts}: errors over them are not test errors "
                      "(predictions.csv column seen_in)")
        e = summary["unseen"]["energy_meV_per_atom"]
        if e["n"]:
            console.print(f"unseen structures only: energy error MAE/RMSE {sig(e['mae'])}/{sig(e['rmse'])} "
                          f"meV/atom over {e['n']} structures")


