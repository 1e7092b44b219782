"""Commands on structures: make derived ones (augment), measure the Taylor error (check), label with a
reference calculator (label), predict with a trained model (predict)."""

from __future__ import annotations

from pathlib import Path

import typer

from pyita.augment.settings import DEFAULT_CONFIG_TYPE
from pyita.cli.app import (ANGULAR_N, ANGULAR_RC, CALC_HELP, ENERGY_KEY_OPTION, FOLD_OPTION, FORCES_KEY_OPTION,
                           RADIAL_N, RADIAL_RC, THREADS_OPTION, TYPES_OPTION, app, ask_if_missing, chebyshev_setup,
                           console, done)


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
    a: float | None = typer.Option(None, "--a", help="New structures per parent (a × N in all)."),
    delta: float | None = typer.Option(None, "--delta", help="Displacement δ in Å (RMS per atom for "
                                                             "random-all)."),
    out: Path = typer.Option(Path("augmented"), "--out", "-o", help="Output folder (must be new or empty)."),
    strategy: str = typer.Option("balanced", help="sequential (the paper) | balanced | random-all."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    fmt: str = typer.Option("xsf", "--format", help="xsf (aenet files + generate.in) or extxyz."),
    only_derived: bool = typer.Option(False, "--only-derived",
                                      help="List only derived structures (the paper's supplementary set)."),
    exclude: Path | None = typer.Option(None, help="File listing parents never to augment (test split)."),
    max_force: float | None = typer.Option(None, help="Skip atoms (random-all: parents) with |F| above "
                                                      "this, eV/Å."),
    cap: float = typer.Option(3.0, help="random-all: largest per-atom displacement, in units of δ."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    workers: int | None = typer.Option(None, help="Worker processes for XSF output (default: the idle "
                                                  "cores, or PYITA_WORKERS); the output is the same."),
    types: str | None = TYPES_OPTION,
    radial_rc: float = RADIAL_RC,
    radial_n: int = RADIAL_N,
    angular_rc: float = ANGULAR_RC,
    angular_n: int = ANGULAR_N,
    config_type: str | None = typer.Option(None, "--config-type", show_default=DEFAULT_CONFIG_TYPE,
                                           help="config_type of the derived frames of --format extxyz (for "
                                                "per-type loss weights, e.g. MACE's config_type_weights)."),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Make Taylor-expanded structures E' = E − F·D from labelled structures. XSF output is an aenet training set
    that `generate.x generate.in` reads in the output folder: input other than a generate.in gets a <Sym>.stp per
    species (the descriptor options) and TYPES energies (--types, else fitted to the parents)."""
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
    delta: str = typer.Option("0.005,0.01,0.02,0.03,0.05", "--delta", help="Comma-separated δ values, Å."),
    strategy: str = typer.Option("balanced,random-all", "--strategy",
                                 help="Comma-separated: sequential, balanced, random-all."),
    parents: int = typer.Option(20, "--parents", help="How many parents to sample (seeded)."),
    a: float = typer.Option(2, "--a", help="Derived structures per parent, per δ and strategy."),
    seed: int = typer.Option(0, help="Seed for the parent sample and the displacements."),
    tolerance: float = typer.Option(1.0, help="Largest acceptable 95th-percentile Taylor error, meV/atom "
                                              "(for the recommended δ)."),
    max_force: float | None = typer.Option(None, help="As in augment: skip atoms with |F| above this, eV/Å."),
    cap: float = typer.Option(3.0, help="random-all: largest per-atom displacement, in units of δ."),
    out: Path = typer.Option(Path("check"), "--out", "-o", help="Output folder (must be new or empty)."),
    workers: int = typer.Option(1, help="Processes computing in parallel."),
    threads: int | None = THREADS_OPTION,
    fold: str = FOLD_OPTION,
    restart: bool = typer.Option(False, help="Discard the checkpoint OUT.partial/ of an earlier run."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure the first-order Taylor error |E − F·D − E(R+D)| against a reference calculator and
    recommend δ. Writes errors.csv, check.json, check.png and check.svg; resumable after a failure."""
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
    calc_kwargs: str | None = typer.Option(None, "--calc-kwargs", help="JSON keyword arguments."),
    workers: int = typer.Option(1, help="Processes computing in parallel."),
    threads: int | None = THREADS_OPTION,
    fold: str = FOLD_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
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
    data: list[str] = typer.Argument(..., help="Structures: generate.in, XSF folder or glob, ASE file, sample."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder (must be new or empty)."),
    forces: bool = typer.Option(True, "--forces/--no-forces", help="Also predict forces."),
    batch_size: int = typer.Option(32, help="Structures per batch."),
    device: str = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict energies and forces; with reference labels, per-structure and per-component errors."""
    from pyita.predict import run_predict
    from pyita.structure import LabelKeys

    summary = run_predict(model, data, out, forces=forces, batch_size=batch_size, device=device,
                          overwrite=overwrite, progress=not quiet, keys=LabelKeys(energy_key, forces_key))
    e, f = summary["energy_meV_per_atom"], summary["force_components_eV_per_A"]
    console.print(f"{summary['structures']} structures → {out}")
    if e["n"]:
        console.print(f"energy error MAE/RMSE {e['mae']:.2f}/{e['rmse']:.2f} meV/atom over {e['n']} structures")
    if f["n"]:
        console.print(f"force error MAE/RMSE {f['mae']:.3f}/{f['rmse']:.3f} eV/Å over {f['n']} components")


