"""Commands that train: one potential (train), or paired trials of conditions judged by statistics
(experiment)."""

from __future__ import annotations

from pathlib import Path

import typer

from pyita.architecture import ChebyshevSetup
from pyita.augment.settings import DEFAULT_DELTA
from pyita.cli.app import app, console


MAX_MEMORY_HELP = ("GiB this process may use in all, below what the machine, a batch system's cgroup and the "
                   "rlimits allow (those are read anyway). Decides whether force training stores descriptor "
                   "Jacobians or builds them per chunk (L-BFGS) or mini-batch (Adam): the same training, slower.")


def train_option(default, text: str):
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
    hidden: str | None = train_option("15:tanh,15:tanh", "Hidden layers, nodes:activation (tanh, sigmoid, "
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
    max_energy: float | None = typer.Option(None, help="MAXENERGY: drop structures more than this many "
                                                       "eV/atom above the atomic reference energies."),
    types: str | None = typer.Option(None, help="Atomic reference energies, e.g. Ti=-1626.67,O=-433.23 (eV); "
                                                "else generate.in's TYPES, else a least-squares fit."),
    radial_rc: float | None = train_option(ChebyshevSetup.radial_rc, "Chebyshev radial cutoff, Å."),
    radial_n: int | None = train_option(ChebyshevSetup.radial_n, "Chebyshev radial order."),
    angular_rc: float | None = train_option(ChebyshevSetup.angular_rc, "Chebyshev angular cutoff, Å."),
    angular_n: int | None = train_option(ChebyshevSetup.angular_n, "Chebyshev angular order."),
    initial_networks: Path | None = typer.Option(None, "--initial-networks",
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
    patience: int | None = typer.Option(None, help="Stop after this many epochs without validation "
                                                   "improvement (needs --validation-fraction)."),
    max_minutes: float | None = typer.Option(None, help="Training-time budget: stop after the epoch that "
                                                        "reaches it and write the model (default: none)."),
    seed: int = typer.Option(0, help="Seed for the split, initial weights, batches and augmentation."),
    resume: bool = typer.Option(False, help="Continue from OUT.ckpt (same data and settings)."),
    overwrite: bool = typer.Option(False, help="Replace an existing model file."),
    device: str = typer.Option("auto", help="auto (CUDA if present) | cpu | cuda."),
    cache_dir: Path | None = typer.Option(None, help="Feature cache folder (default ~/.cache/pyita)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Featurize without the on-disk cache."),
    checkpoint_every: float = typer.Option(30.0, help="Seconds between checkpoints (0: every epoch)."),
    max_memory: float | None = typer.Option(None, metavar="GIB", help=MAX_MEMORY_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a Behler–Parrinello potential (aenet's Chebyshev descriptor) on energies, and forces if asked."""
    from pyita.reference import parse_types
    from pyita.train.run import run_train
    from pyita.train.settings import TrainSettings

    descriptor = {k: v for k, v in dict(radial_rc=radial_rc, radial_n=radial_n, angular_rc=angular_rc,
                                        angular_n=angular_n).items() if v is not None}
    settings = TrainSettings.from_flat(
        method=method, iterations=iterations, hidden=hidden, force_weight=force_weight, force_fraction=force_fraction,
        force_fraction_of=force_fraction_of, derived_weight=derived_weight, parent_child_weight=parent_child_weight,
        batch_size=batch_size, learning_rate=learning_rate, weight_init=weight_init,
        energy_normalization=energy_normalization, patience=patience, max_minutes=max_minutes, seed=seed,
        augment_a=augment_a, augment_delta=augment_delta, augment_strategy=augment_strategy, on_the_fly=on_the_fly,
        device=device, checkpoint_every=checkpoint_every, max_memory=max_memory, descriptor=descriptor,
        initial_networks=None if initial_networks is None else str(initial_networks))
    summary = run_train(data, out, settings, test_fraction=test_fraction,
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
def experiment(
    config_file: Path | None = typer.Argument(None, metavar="[CONFIG]", help="Experiment TOML file."),
    preset: str | None = typer.Option(None, help="quick | aa | seed-500 | seed-full | powered | crossover | "
                                                 "versus-aenet | force-budget."),
    out: Path = typer.Option(Path("experiment"), "--out", "-o", help="Output folder."),
    resume: bool = typer.Option(False, help="Continue an interrupted experiment in --out."),
    data: str | None = typer.Option(None, help="Override the config's data."),
    trials: int | None = typer.Option(None, help="Override the number of paired trials."),
    subset_size: int | None = typer.Option(None, help="Override the subset size."),
    max_energy: float | None = typer.Option(None, help="Override MAXENERGY (eV/atom above the atomic "
                                                       "reference energies)."),
    backend: str | None = typer.Option(None, help="Override the trainer: embedded | aenet (aenet leaves out "
                                                  "the conditions it cannot train, and says which)."),
    aenet_bin: Path | None = typer.Option(None, help="Folder of aenet's generate.x, train.x, predict.x "
                                                     "(default: AENET_BIN, then PATH)."),
    workers: int | None = typer.Option(None, help="Parallel training processes (local pool)."),
    scheduler: str | None = typer.Option(None, help="Dask scheduler address (e.g. tcp://host:8786)."),
    max_memory: float | None = typer.Option(None, metavar="GIB", help="Per task (embedded trainer): "
                                            + MAX_MEMORY_HELP + " Free to change on --resume."),
    report_only: bool = typer.Option(False, help="Rebuild the report of the experiment in --out from its finished "
                                                 "results, with the settings stored with them (a CONFIG, if "
                                                 "given, must be that experiment's)."),
    overwrite: bool = typer.Option(False, help="Start again in an earlier experiment folder: its results are "
                                               "replaced (only what `pyita experiment` wrote there)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Paired trials of baseline vs augmented (and force-trained) potentials, with statistics and a report."""
    from pyita.experiment import run_experiment

    overrides = {"data": data, "trials": trials, "subset_size": subset_size, "max_energy": max_energy,
                 "backend": backend, "aenet_bin": aenet_bin and str(aenet_bin), "workers": workers,
                 "scheduler": scheduler, "max_memory": max_memory}
    summary = run_experiment(config_file, preset, overrides, out, resume=resume, overwrite=overwrite,
                             report_only=report_only, progress=not quiet)
    for line in summary["plain_summary"]:   # the report's opening lines: one per condition and metric
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")


