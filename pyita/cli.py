"""The ``pyita`` command line: a thin layer over the Python API, one command per job."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pyita.augment.settings import DEFAULT_DELTA
from pyita.errors import Interrupted, PyitaError
from pyita.io.aenet_inputs import ChebyshevSetup

# OpenMP threads that spin while waiting make torch 10–20× slower when another process holds a core
# (measured on 2 cores); passive waiting costs nothing when the machine is idle. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    name="pyita",
    help="Taylor-expansion data augmentation for neural-network interatomic potentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)
console = Console()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    from rich.markup import escape  # messages hold brackets, e.g. pip install 'pyita[xtb]', file.xyz[3]

    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


warnings.showwarning = _show_warning


def _version(value: bool) -> None:
    if value:
        from pyita import __version__

        console.print(f"pyita {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Taylor-expansion data augmentation, training and evaluation of neural-network potentials."""


def _ask_if_missing(value, name: str, prompt: str, kind):
    """The paper's program asked interactively; do so only when a person is at the terminal."""
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise PyitaError(f"--{name} is required (stdin is not a terminal, so PyITA cannot ask for it)")
    return typer.prompt(prompt, type=kind)


@app.command()
def augment(
    data: str = typer.Argument(..., help="generate.in, XSF folder or glob (quoted), ASE file (extxyz…), "
                                         "or 'sample[:name]' for the bundled data."),
    a: Optional[float] = typer.Option(None, "--a", help="New structures per parent (a × N in all)."),
    delta: Optional[float] = typer.Option(None, "--delta", help="Displacement δ in Å (RMS per atom for "
                                                                 "random-all)."),
    out: Path = typer.Option(Path("augmented"), "--out", "-o", help="Output folder (must be new or empty)."),
    strategy: str = typer.Option("balanced", help="sequential (the paper) | balanced | random-all."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    fmt: str = typer.Option("xsf", "--format", help="xsf (aenet files + generate.in) or extxyz."),
    only_derived: bool = typer.Option(False, "--only-derived",
                                      help="List only derived structures (the paper's supplementary set)."),
    exclude: Optional[Path] = typer.Option(None, help="File listing parents never to augment (test split)."),
    max_force: Optional[float] = typer.Option(None, help="Skip atoms (random-all: parents) with |F| above "
                                                          "this, eV/Å."),
    cap: float = typer.Option(3.0, help="random-all: largest per-atom displacement, in units of δ."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    workers: Optional[int] = typer.Option(None, help="Worker processes for XSF output (default: the idle "
                                                      "cores, or PYITA_WORKERS); the output is the same."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Make Taylor-expanded structures E' = E − F·D from labelled structures."""
    from pyita.augment import AugmentSettings
    from pyita.augment.run import augment_to_disk

    a = _ask_if_missing(a, "a", "New structures per parent (a)", float)
    delta = _ask_if_missing(delta, "delta", "Displacement delta in Angstrom", float)
    settings = AugmentSettings(a=a, delta=delta, strategy=strategy, seed=seed, max_force=max_force, cap=cap)
    summary = augment_to_disk(data, out, settings, fmt=fmt, only_derived=only_derived, exclude_file=exclude,
                              overwrite=overwrite, progress=not quiet, workers=workers)
    c = summary["counts"]
    console.print(f"{c['derived']} derived structures from {c['augmented_parents']} of {c['parents']} parents "
                  f"({c['excluded']} excluded) → {out}  [{summary['seconds']:.1f} s]")


_CALC_HELP = ("Reference calculator: a preset (gfn1-xtb, gfn2-xtb: tblite, pip install 'pyita\\[xtb]'; emt: "
              "ASE EMT for metals) or an ASE calculator as module:Class, optionally with JSON keyword "
              "arguments: 'ase.calculators.emt:EMT{}'.")


_THREADS_OPTION = typer.Option(None, help="OpenMP threads per process (default: as the environment says; "
                                           "1 per worker when --workers > 1).")
_FOLD_OPTION = typer.Option("auto", help="Evaluate each cell replicated AxBxC times (a k-mesh for Γ-only tblite): "
                                         "auto = a structure's own info 'fold' (the bundled sample has one), "
                                         "none, or e.g. 2x2x1.")


@app.command()
def check(
    data: str = typer.Argument(..., help="Structures to take parents from (any DATA that augment accepts)."),
    calculator: str = typer.Option(..., "--calculator", "-c", help=_CALC_HELP),
    calc_kwargs: Optional[str] = typer.Option(None, "--calc-kwargs",
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
    max_force: Optional[float] = typer.Option(None, help="As in augment: skip atoms with |F| above this, eV/Å."),
    cap: float = typer.Option(3.0, help="random-all: largest per-atom displacement, in units of δ."),
    out: Path = typer.Option(Path("check"), "--out", "-o", help="Output folder (must be new or empty)."),
    workers: int = typer.Option(1, help="Processes computing in parallel."),
    threads: Optional[int] = _THREADS_OPTION,
    fold: str = _FOLD_OPTION,
    restart: bool = typer.Option(False, help="Discard the checkpoint OUT.partial/ of an earlier run."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure the first-order Taylor error |E − F·D − E(R+D)| against a reference calculator and
    recommend δ. Writes errors.csv, check.json, check.png and check.svg; resumable after a failure."""
    from pyita.check.check import CheckSettings, print_report, run_check

    settings = CheckSettings(deltas=delta, strategies=strategy, parents=parents, a=a, seed=seed,
                             tolerance=tolerance, max_force=max_force, cap=cap)
    result = run_check(data, calculator, out, settings, calc_kwargs=calc_kwargs, workers=workers,
                       progress=not quiet, overwrite=overwrite, restart=restart, threads=threads,
                       fold=fold)
    print_report(result.summary, console)
    c = result.summary["counts"]
    console.print(f"{c['calculations']} calculations ({c['parents']} parents, {c['derived']} derived) → {out}  "
                  f"[{result.summary['seconds']:.1f} s]")


@app.command()
def label(
    data: str = typer.Argument(..., help="Structures to label (any DATA that augment accepts; labels optional)."),
    calculator: str = typer.Option(..., "--calculator", "-c", help=_CALC_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Output extended-XYZ file, written when complete."),
    calc_kwargs: Optional[str] = typer.Option(None, "--calc-kwargs", help="JSON keyword arguments."),
    workers: int = typer.Option(1, help="Processes computing in parallel."),
    threads: Optional[int] = _THREADS_OPTION,
    fold: str = _FOLD_OPTION,
    restart: bool = typer.Option(False, help="Discard the checkpoint OUT.partial of an earlier run."),
    overwrite: bool = typer.Option(False, help="Replace an existing output file."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Compute energies and forces with a reference calculator; resumable (OUT.partial), parallel."""
    from pyita.check.label import label as run_label

    summary = run_label(data, calculator, out, calc_kwargs=calc_kwargs, workers=workers, progress=not quiet,
                        restart=restart, overwrite=overwrite, threads=threads, fold=fold)
    resumed = f" ({summary['resumed']} from the checkpoint)" if summary["resumed"] else ""
    console.print(f"{summary['structures']} structures labelled with {summary['calculator']['name']}{resumed} "
                  f"→ {out}  [{summary['seconds']:.1f} s]")


def _chebyshev(radial_rc: float, radial_n: int, angular_rc: float, angular_n: int) -> ChebyshevSetup:
    try:
        return ChebyshevSetup(radial_rc=radial_rc, radial_n=radial_n, angular_rc=angular_rc, angular_n=angular_n)
    except ValueError as exc:
        raise PyitaError(str(exc)) from None


# The Chebyshev descriptor's settings, shared by `pyita train` and `pyita aenet prepare`, with the defaults of
# their one home, ChebyshevSetup (aenet's TiO2 example).
_RADIAL_RC = typer.Option(ChebyshevSetup.radial_rc, help="Chebyshev radial cutoff, Å.")
_RADIAL_N = typer.Option(ChebyshevSetup.radial_n, help="Chebyshev radial order.")
_ANGULAR_RC = typer.Option(ChebyshevSetup.angular_rc, help="Chebyshev angular cutoff, Å.")
_ANGULAR_N = typer.Option(ChebyshevSetup.angular_n, help="Chebyshev angular order.")


def _train_option(default, text: str):
    """A model setting of `pyita train`: its default applies unless --initial-networks gives it."""
    return typer.Option(None, help=f"{text} With --initial-networks: theirs.", show_default=str(default))


@app.command()
def train(
    data: str = typer.Argument(..., help="generate.in, XSF folder or glob (quoted), ASE file (extxyz…), "
                                         "or 'sample[:name]' for the bundled data."),
    out: str = typer.Option("model.pt", "--out", "-o", help="Model file to write (MODEL.history.csv beside it, "
                                                            "and MODEL.ckpt while training)."),
    test_fraction: float = typer.Option(0.1, help="Original structures held out as the test set (by parent)."),
    validation_fraction: float = typer.Option(0.0, help="Held out for early stopping and best-epoch choice."),
    method: str = typer.Option("lbfgs", help="lbfgs (full batch, aenet's bfgs) | adam (mini-batch)."),
    iterations: int = typer.Option(500, help="Epochs (one L-BFGS iteration, or one pass of Adam)."),
    hidden: Optional[str] = _train_option("15:tanh,15:tanh", "Hidden layers, nodes:activation (tanh, sigmoid, "
                                                             "mtanh, linear)."),
    force_weight: float = typer.Option(0.0, help="Weight of the force term (direct force training; 0: energy "
                                                 "only). Errors are scaled by the data's spread."),
    force_fraction: float = typer.Option(1.0, help="Share of the force information (seeded choice) that the "
                                                   "force term uses; only that share needs Jacobians."),
    force_fraction_of: str = typer.Option("structures", help="What --force-fraction is a share of: structures "
                                                             "(whole ones) | atoms (of every structure)."),
    augment_a: float = typer.Option(0.0, help="Taylor-derived structures per training parent (0: none)."),
    augment_delta: float = typer.Option(DEFAULT_DELTA, help="Displacement δ in Å."),
    augment_strategy: str = typer.Option("balanced", help="sequential | balanced | random-all."),
    on_the_fly: bool = typer.Option(False, "--on-the-fly", help="Draw fresh derived structures every epoch."),
    derived_weight: float = typer.Option(1.0, help="Loss weight of derived structures (originals: 1)."),
    parent_child_weight: float = typer.Option(0.0, help="Weight of the parent–child Taylor loss on "
                                                        "E(child) − E(parent) vs −F·D (0: off)."),
    max_energy: Optional[float] = typer.Option(None, help="MAXENERGY: drop structures more than this many "
                                                          "eV/atom above the atomic reference energies."),
    types: Optional[str] = typer.Option(None, help="Atomic reference energies, e.g. Ti=-1626.67,O=-433.23 (eV); "
                                                   "else generate.in's TYPES, else a least-squares fit."),
    radial_rc: Optional[float] = _train_option(ChebyshevSetup.radial_rc, "Chebyshev radial cutoff, Å."),
    radial_n: Optional[int] = _train_option(ChebyshevSetup.radial_n, "Chebyshev radial order."),
    angular_rc: Optional[float] = _train_option(ChebyshevSetup.angular_rc, "Chebyshev angular cutoff, Å."),
    angular_n: Optional[int] = _train_option(ChebyshevSetup.angular_n, "Chebyshev angular order."),
    initial_networks: Optional[Path] = typer.Option(None, "--initial-networks",
                                                    help="Start from these networks: a PyITA model (.pt) or a "
                                                         "folder of aenet .nn files (train.x's, or `pyita aenet "
                                                         "export`'s). Their descriptor, hidden layers, "
                                                         "normalisation and reference energies are kept; options "
                                                         "that contradict them are refused."),
    batch_size: int = typer.Option(32, help="Adam: structures per mini-batch."),
    learning_rate: float = typer.Option(1e-3, help="Adam: learning rate."),
    weight_init: str = typer.Option("aenet", help="Initial weight range: aenet (its train.x's) | pytorch."),
    energy_normalization: str = typer.Option("range", help="Network output scaling: range (aenet's midpoint and "
                                                           "half-range of the cohesive energies) | std."),
    patience: Optional[int] = typer.Option(None, help="Stop after this many epochs without validation "
                                                      "improvement (needs --validation-fraction)."),
    max_minutes: Optional[float] = typer.Option(None, help="Training-time budget: stop after the epoch that "
                                                           "reaches it and write the model (default: none)."),
    seed: int = typer.Option(0, help="Seed for the split, initial weights, batches and augmentation."),
    resume: bool = typer.Option(False, help="Continue from OUT.ckpt (same data and settings)."),
    overwrite: bool = typer.Option(False, help="Replace an existing model file."),
    device: str = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda."),
    cache_dir: Optional[Path] = typer.Option(None, help="Feature cache folder (default ~/.cache/pyita)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Featurize without the on-disk cache."),
    checkpoint_every: float = typer.Option(30.0, help="Seconds between checkpoints (0: every epoch)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a Behler–Parrinello potential (aenet's Chebyshev descriptor) on energies, and forces if asked."""
    from pyita.reference import parse_types
    from pyita.train.run import train_from_data
    from pyita.train.settings import TrainSettings

    descriptor = {k: v for k, v in dict(radial_rc=radial_rc, radial_n=radial_n, angular_rc=angular_rc,
                                        angular_n=angular_n).items() if v is not None}
    settings = TrainSettings.from_flat(
        method=method, iterations=iterations, hidden=hidden, force_weight=force_weight, force_fraction=force_fraction,
        force_fraction_of=force_fraction_of, derived_weight=derived_weight, parent_child_weight=parent_child_weight,
        batch_size=batch_size, learning_rate=learning_rate, weight_init=weight_init,
        energy_normalization=energy_normalization, patience=patience, max_minutes=max_minutes, seed=seed,
        augment_a=augment_a, augment_delta=augment_delta, augment_strategy=augment_strategy, on_the_fly=on_the_fly,
        device=device, checkpoint_every=checkpoint_every, descriptor=descriptor,
        initial_networks=None if initial_networks is None else str(initial_networks))
    summary = train_from_data(data, out, settings, test_fraction=test_fraction,
                              validation_fraction=validation_fraction, max_energy=max_energy,
                              references=parse_types(types) or None, resume=resume, overwrite=overwrite,
                              cache_dir=cache_dir, use_cache=not no_cache, progress=not quiet)
    c, last, test = summary["counts"], summary["last"], summary["test_errors"]
    console.print(f"trained on {c['train']} structures ({c['train_derived']} derived), validation {c['validation']}, "
                  f"test {c['test']}, {c['dropped']} dropped by --max-energy; {summary['epochs']} epochs "
                  f"(best {summary['best_epoch']}) in {summary['seconds']:.1f} s → {out}")
    console.print(f"train energy MAE/RMSE {last.get('train_mae', float('nan')):.2f}/"
                  f"{last.get('train_rmse', float('nan')):.2f} meV/atom")
    if test:
        e, f = test["energy_meV_per_atom"], test["force_components_eV_per_A"]
        console.print(f"test  energy MAE/RMSE {e['mae']:.2f}/{e['rmse']:.2f} meV/atom; "
                      f"force MAE/RMSE {f['mae']:.3f}/{f['rmse']:.3f} eV/Å")


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file written by `pyita train`, or a folder of aenet .nn files."),
    data: list[str] = typer.Argument(..., help="Structures: generate.in, XSF folder or glob, ASE file, sample."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder (must be new or empty)."),
    forces: bool = typer.Option(True, "--forces/--no-forces", help="Also predict forces."),
    batch_size: int = typer.Option(32, help="Structures per batch."),
    device: str = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output folder (after success only)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Predict energies and forces; with reference labels, per-structure and per-component errors."""
    from pyita.predict import predict_to_dir

    summary = predict_to_dir(model, data, out, forces=forces, batch_size=batch_size, device=device,
                             overwrite=overwrite, progress=not quiet)
    e, f = summary["energy_meV_per_atom"], summary["force_components_eV_per_A"]
    console.print(f"{summary['structures']} structures → {out}")
    if e["n"]:
        console.print(f"energy error MAE/RMSE {e['mae']:.2f}/{e['rmse']:.2f} meV/atom over {e['n']} structures")
    if f["n"]:
        console.print(f"force error MAE/RMSE {f['mae']:.3f}/{f['rmse']:.3f} eV/Å over {f['n']} components")


@app.command()
def experiment(
    config_file: Optional[Path] = typer.Argument(None, metavar="[CONFIG]", help="Experiment TOML file."),
    preset: Optional[str] = typer.Option(None, help="quick | aa | seed-500 | seed-full | powered | crossover | "
                                                    "versus-aenet | force-budget."),
    out: Path = typer.Option(Path("experiment"), "--out", "-o", help="Output folder."),
    resume: bool = typer.Option(False, help="Continue an interrupted experiment in --out."),
    data: Optional[str] = typer.Option(None, help="Override the config's data."),
    trials: Optional[int] = typer.Option(None, help="Override the number of paired trials."),
    subset_size: Optional[int] = typer.Option(None, help="Override the subset size."),
    max_energy: Optional[float] = typer.Option(None, help="Override MAXENERGY (eV/atom above the atomic "
                                                            "reference energies)."),
    backend: Optional[str] = typer.Option(None, help="Override the trainer: embedded | aenet (aenet leaves out "
                                                       "the conditions it cannot train, and says which)."),
    aenet_bin: Optional[Path] = typer.Option(None, help="Folder of aenet's generate.x, train.x, predict.x "
                                                          "(default: AENET_BIN, then PATH)."),
    workers: Optional[int] = typer.Option(None, help="Parallel training processes (local pool)."),
    scheduler: Optional[str] = typer.Option(None, help="Dask scheduler address (e.g. tcp://host:8786)."),
    report_only: bool = typer.Option(False, help="Rebuild the report of the experiment in --out from its finished "
                                                 "results, with the settings stored with them (a CONFIG, if "
                                                 "given, must be that experiment's)."),
    overwrite: bool = typer.Option(False, help="Start again in an earlier experiment folder: its results are "
                                               "replaced (only what `pyita experiment` wrote there)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Paired trials of baseline vs augmented (and force-trained) potentials, with statistics and a report."""
    from pyita.experiment.runner import experiment

    overrides = {"data": data, "trials": trials, "subset_size": subset_size, "max_energy": max_energy,
                 "backend": backend, "aenet_bin": aenet_bin and str(aenet_bin), "workers": workers,
                 "scheduler": scheduler}
    summary = experiment(config_file, preset, overrides, out, resume=resume, overwrite=overwrite,
                         report_only=report_only, progress=not quiet)
    for line in summary["plain_summary"]:   # the report's opening lines: one per condition and metric
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")


aenet_app = typer.Typer(name="aenet", no_args_is_help=True, add_completion=False,
                        help="Drive aenet (generate.x → train.x → predict.x): write run folders, run, "
                             "read results.")
app.add_typer(aenet_app, name="aenet")


@aenet_app.command("prepare")
def aenet_prepare(
    data: str = typer.Argument(..., help="generate.in (also the augmented one of `pyita augment`), XSF folder "
                                         "or glob (quoted), ASE file, or 'sample[:name]'."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write (must be new or empty)."),
    test_parents: Optional[Path] = typer.Option(None, "--test-parents",
                                                help="File naming the test parents, one per line (held out "
                                                     "with all their derived structures)."),
    test_fraction: float = typer.Option(0.1, help="Without --test-parents: fraction of the original structures "
                                                  "held out as test parents (0: none)."),
    seed: int = typer.Option(0, help="Seed for choosing the test parents."),
    types: Optional[str] = typer.Option(None, help="Atomic reference energies, e.g. Ti=-1626.67,O=-433.23 (eV); "
                                                   "else the input generate.in's, else fitted by least squares."),
    descriptor: str = typer.Option("chebyshev", help="chebyshev (TiO2 example settings) | behler (Behler2011)."),
    radial_rc: float = _RADIAL_RC,
    radial_n: int = _RADIAL_N,
    angular_rc: float = _ANGULAR_RC,
    angular_n: int = _ANGULAR_N,
    iterations: int = typer.Option(500, help="train.x ITERATIONS (epochs)."),
    method: str = typer.Option("bfgs", help="bfgs | lm | adam | online_sd | ekf."),
    method_param: Optional[list[str]] = typer.Option(None, "--method-param",
                                                     help="Method parameter key=value, repeatable (aenet's "
                                                          "names, e.g. --method-param mu=0.001)."),
    hidden: str = typer.Option("15:tanh,15:tanh", help="Hidden layers nodes:activation, comma-separated."),
    max_energy: Optional[float] = typer.Option(None, help="MAXENERGY, eV/atom above the reference energies; "
                                                          "PyITA applies it to the test parents too."),
    no_forces: bool = typer.Option(False, "--no-forces", help="predict.x without FORCES (energies only)."),
    initial_networks: Optional[Path] = typer.Option(None, help="Folder with <Sym>.nn files train.x starts from "
                                                               "(same initial weights across runs)."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty run folder (after success only)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a self-contained aenet run folder: generate.in, .stp files, train.in, predict.in, run.sh, xsf/."""
    from pyita.backends.aenet import AenetSettings, prepare_aenet
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
    cheb = _chebyshev(radial_rc, radial_n, angular_rc, angular_n)
    settings = AenetSettings(hidden=hidden, iterations=iterations, method=method, method_params=params,
                             max_energy=max_energy, descriptor=descriptor, chebyshev=cheb, forces=not no_forces,
                             initial_networks=None if initial_networks is None else str(initial_networks))
    record = prepare_aenet(data, out, settings, test_parents=test_parents, test_fraction=test_fraction, seed=seed,
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
    aenet_bin: Optional[Path] = typer.Option(None, "--aenet-bin", help="Folder holding generate.x, train.x, "
                                                                       "predict.x (also: AENET_BIN)."),
    overwrite: bool = typer.Option(False, help="Replace the results of an earlier finished run in RUNDIR."),
    collect_only: bool = typer.Option(False, "--collect-only", help="Only read the outputs of a finished run "
                                                                    "(e.g. one made with run.sh)."),
    keep_epoch_networks: bool = typer.Option(True, help="Keep train.x's per-epoch network files (*.nn-00001…)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Run generate.x, train.x and predict.x; detect failures from their output; write error tables."""
    from pyita.backends.aenet import collect_results, run_aenet

    if collect_only:
        results = collect_results(rundir)
    else:
        results = run_aenet(rundir, aenet_bin=aenet_bin, overwrite=overwrite, progress=not quiet,
                            keep_epoch_networks=keep_epoch_networks)
    s = results["summary"]
    e, f = s["energy_meV_per_atom"], s["force_components_eV_per_A"]
    console.print(f"{s['test_set']}: {e['n']} structures, energy MAE {e['mae']:.2f} / RMSE {e['rmse']:.2f} / "
                  f"median {e['median']:.2f} meV/atom; force MAE {f['mae']:.3f} / RMSE {f['rmse']:.3f} eV/Å "
                  f"({f['n']} components)")
    console.print(f"tables: {rundir / 'errors-energy.csv'}, {rundir / 'errors-force.csv'}, "
                  f"{rundir / 'results.json'}")


@aenet_app.command("export")
def aenet_export(
    model: Path = typer.Argument(..., help="Model file written by `pyita train` (or a folder of .nn files)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (must be new or empty)."),
    overwrite: bool = typer.Option(False, help="Replace an earlier `pyita aenet export` folder (after success "
                                               "only)."),
) -> None:
    """Write the model as aenet networks, one <Sym>.<arch>.nn per species (e.g. Ti.15t-15t.nn, <Sym>.nn
    without hidden layers), for aenet's predict.x, LAMMPS or ASE interfaces: they reproduce PyITA's
    energies and forces. List them under NETWORKS in predict.in."""
    from pyita.backends.aenet import export_aenet

    record = export_aenet(model, out, overwrite=overwrite)
    console.print(f"{', '.join(record['networks'].values())} → {out}")

def _error(message: str) -> None:
    """One line, whatever the message holds (a file name may hold a line break)."""
    from rich.markup import escape

    message = message.replace("\r", "\\r").replace("\n", "\\n")
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _terminate(signum, frame) -> None:
    """Ctrl-C and SIGTERM unwind alike: workers are stopped, temporary outputs removed, locks released.
    (Not KeyboardInterrupt, which typer turns into a silent exit 130.)"""
    raise Interrupted(signum)


def main() -> None:
    """Console-script entry point: user errors become one clear line and exit status 2, never a traceback;
    an interruption (Ctrl-C, SIGTERM) cleans up, says what is left and exits 128 + the signal number."""
    signal.signal(signal.SIGTERM, _terminate)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:   # not ignored (a background job)
        signal.signal(signal.SIGINT, _terminate)
    try:
        app()
    except PyitaError as exc:
        _error(str(exc))
        sys.exit(2)
    except (KeyboardInterrupt, Interrupted) as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        # what the command left, added as a note on the way out (e.g. a checkpoint, partial aenet output)
        left = "; ".join(getattr(exc, "__notes__", ())) or ("no partial output was kept (resumable commands "
                                                             "continue from their checkpoint when rerun)")
        _error(f"interrupted by {signal.Signals(signum).name}; {left}")
        sys.exit(128 + signum)
    except OSError as exc:  # the system refused a file operation PyITA did not foresee: say which and why
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}")
        sys.exit(2)
    except Exception as exc:  # a bug PyITA did not foresee: one line to report, the traceback on request
        if os.environ.get("PYITA_TRACEBACK"):
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} — please report this PyITA bug with the command line "
               "(PYITA_TRACEBACK=1 shows the traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()
