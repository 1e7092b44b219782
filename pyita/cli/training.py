"""Commands that train: one potential (train), or paired trials of conditions judged by statistics
(experiment)."""

from __future__ import annotations

from pathlib import Path

import typer

from pyita.architecture import ChebyshevSetup
from pyita.augment.settings import DEFAULT_DELTA
from pyita.cli.app import (DEVICE_OPTION, ENERGY_KEY_OPTION, FORCES_KEY_OPTION, LOG_FILE, QUIET, VERBOSE, Backend,
                           EnergyNormalization, ForceFractionOf, Method, Preset, Strategy, WeightInit, app, console)
from pyita.progress import sig


MAX_MEMORY_HELP = ("GiB this process may use in all, below what the machine, a batch system's cgroup and the "
                   "rlimits allow (those are read anyway). Decides whether force training stores descriptor "
                   "Jacobians or builds them per chunk (L-BFGS) or mini-batch (Adam): the same training, slower.")


def train_option(default, text: str):
    """A model setting of `pyita train`: its default applies unless --initial-networks gives it (so the option's
    own default is None, and the help says the real one plainly)."""
    return typer.Option(None, show_default=False,
                        help=f"{text} Default: {default} (with --initial-networks: theirs).")


@app.command()
def train(
    data: str = typer.Argument(..., help="generate.in, XSF folder or glob (quoted), ASE file (extxyz…), "
                                         "or 'sample[:name]' for the bundled data."),
    out: str = typer.Option("model.pt", "--out", "-o", help="Model file to write (MODEL.history.csv is written "
                                                            "beside it, and MODEL.ckpt while training)."),
    test_fraction: float = typer.Option(0.1, help="Share of the original structures held out as the test set "
                                                  "(whole parents, with their derived structures)."),
    validation_fraction: float = typer.Option(0.0, help="Share held out for early stopping and the best epoch."),
    method: Method = typer.Option("lbfgs", help="Optimiser: lbfgs (full batch, as aenet's bfgs) or adam "
                                                "(mini-batches)."),
    iterations: int = typer.Option(500, help="Epochs: one L-BFGS iteration, or one pass of Adam over the data."),
    hidden: str | None = train_option("15:tanh,15:tanh", "Hidden layers as nodes:activation, comma-separated "
                                      "(activations tanh, sigmoid, mtanh, linear)."),
    force_weight: float = typer.Option(0.0, help="Weight of the force term for direct force training (0: energies "
                                                 "only). Errors are scaled by the data's spread."),
    force_fraction: float = typer.Option(1.0, help="Share of the force information (a seeded choice) that the "
                                                   "force term uses; only that share needs Jacobians."),
    force_fraction_of: ForceFractionOf = typer.Option("structures", help="What --force-fraction is a share of: "
                                                                         "whole structures, or the atoms of every "
                                                                         "structure."),
    augment_a: float = typer.Option(0.0, help="Taylor-derived structures per training parent (0: none)."),
    augment_delta: float = typer.Option(DEFAULT_DELTA, help="Displacement δ of the derived structures, in Å."),
    augment_strategy: Strategy = typer.Option("balanced", help="How derived structures are displaced (see "
                                                               "docs/method.md)."),
    on_the_fly: bool = typer.Option(False, "--on-the-fly", help="Draw fresh derived structures every epoch."),
    derived_weight: float = typer.Option(1.0, help="Loss weight of derived structures (originals weigh 1)."),
    parent_child_weight: float = typer.Option(0.0, help="Weight of the parent–child Taylor loss on "
                                                        "E(child) − E(parent) against −F·D (0: off)."),
    max_energy: float | None = typer.Option(None, help="MAXENERGY: drop structures more than this many "
                                                       "eV/atom above the atomic reference energies."),
    types: str | None = typer.Option(None, help="Atomic reference energies in eV, e.g. Ti=-1626.67,O=-433.23. "
                                                "Default: generate.in's TYPES, else a least-squares fit."),
    radial_rc: float | None = train_option(ChebyshevSetup.radial_rc, "Chebyshev radial cutoff in Å."),
    radial_n: int | None = train_option(ChebyshevSetup.radial_n, "Chebyshev radial order."),
    angular_rc: float | None = train_option(ChebyshevSetup.angular_rc, "Chebyshev angular cutoff in Å."),
    angular_n: int | None = train_option(ChebyshevSetup.angular_n, "Chebyshev angular order."),
    initial_networks: Path | None = typer.Option(None, "--initial-networks",
                                                 help="Start from these networks: a PyITA model (.pt) or a "
                                                      "folder of aenet .nn files (train.x's, or `pyita aenet "
                                                      "export`'s). Their descriptor, hidden layers, "
                                                      "normalisation and reference energies are kept; options "
                                                      "that contradict them are refused."),
    batch_size: int = typer.Option(32, help="Structures per mini-batch (adam)."),
    learning_rate: float = typer.Option(1e-3, help="Learning rate (adam)."),
    weight_init: WeightInit = typer.Option("aenet", help="Range of the initial weights: aenet's train.x's, or "
                                                         "PyTorch's default."),
    energy_normalization: EnergyNormalization = typer.Option("range", help="Scaling of the network output: range "
                                                                           "(aenet's midpoint and half-range of the "
                                                                           "cohesive energies) or std."),
    patience: int | None = typer.Option(None, help="Stop after this many epochs without validation "
                                                   "improvement (needs --validation-fraction)."),
    max_minutes: float | None = typer.Option(None, help="Training-time budget: stop after the epoch that "
                                                        "reaches it and write the model. Default: no budget."),
    seed: int = typer.Option(0, help="Seed for the split, initial weights, batches and augmentation."),
    resume: bool = typer.Option(False, help="Continue from OUT.ckpt (same data and settings)."),
    overwrite: bool = typer.Option(False, help="Replace an existing model file."),
    device: str = DEVICE_OPTION,
    cache_dir: Path | None = typer.Option(None, show_default=False,
                                          help="Feature cache folder. Default: features/ in $PYITA_CACHE, else in "
                                               "$XDG_CACHE_HOME/pyita, else in ~/.cache/pyita."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Featurize without the on-disk cache."),
    checkpoint_every: float = typer.Option(30.0, help="Seconds between checkpoints (0: every epoch)."),
    max_memory: float | None = typer.Option(None, metavar="GIB", show_default=False, help=MAX_MEMORY_HELP),
    energy_key: str | None = ENERGY_KEY_OPTION,
    forces_key: str | None = FORCES_KEY_OPTION,
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Train a Behler–Parrinello potential (aenet's Chebyshev descriptor) on energies, and forces if asked."""
    from pyita.reference import parse_types
    from pyita.structure import LabelKeys
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
                        cache_dir=cache_dir, use_cache=not no_cache, progress=not quiet,
                        keys=LabelKeys(energy_key, forces_key))
    c, last, test = summary["counts"], summary["last"], summary["test_errors"]
    derived = "derived drawn fresh each epoch" if on_the_fly else f"{c['train_derived']} derived"
    console.print(f"trained on {c['train']} structures ({derived}), validation {c['validation']}, "
                  f"test {c['test']}, {c['dropped']} dropped by --max-energy; {summary['epochs']} epochs "
                  f"(best {summary['best_epoch']}) in {summary['seconds']:.1f} s → {out}")
    console.print(f"train energy MAE/RMSE {sig(last.get('train_mae', float('nan')))}/"
                  f"{sig(last.get('train_rmse', float('nan')))} meV/atom")
    if test:
        e, f = test["energy_meV_per_atom"], test["force_components_eV_per_A"]
        console.print(f"test  energy MAE/RMSE {sig(e['mae'])}/{sig(e['rmse'])} meV/atom; "
                      f"force MAE/RMSE {sig(f['mae'])}/{sig(f['rmse'])} eV/Å")


@app.command()
def experiment(
    config_file: Path | None = typer.Argument(None, metavar="[CONFIG]", help="Experiment TOML file (or give "
                                                                             "--preset)."),
    preset: Preset | None = typer.Option(None, help="A bundled experiment instead of a CONFIG file (see the "
                                                    "README)."),
    out: Path = typer.Option(Path("experiment"), "--out", "-o", help="Output folder."),
    resume: bool = typer.Option(False, help="Continue an interrupted experiment in --out."),
    data: str | None = typer.Option(None, help="Data to use instead of the config's."),
    trials: int | None = typer.Option(None, help="Number of paired trials instead of the config's."),
    subset_size: int | None = typer.Option(None, help="Subset size instead of the config's."),
    max_energy: float | None = typer.Option(None, help="MAXENERGY instead of the config's, in eV/atom above the "
                                                       "atomic reference energies."),
    backend: Backend | None = typer.Option(None, help="Trainer instead of the config's (aenet leaves out the "
                                                      "conditions it cannot train, and says which)."),
    aenet_bin: Path | None = typer.Option(None, show_default=False,
                                          help="Folder of aenet's generate.x, train.x and predict.x. Default: "
                                               "$AENET_BIN, then the PATH."),
    workers: int | None = typer.Option(None, help="Parallel training processes (a local pool)."),
    scheduler: str | None = typer.Option(None, help="Run the tasks on the Dask cluster of this scheduler address, "
                                                    "e.g. tcp://host:8786."),
    scheduler_file: Path | None = typer.Option(None, help="Run the tasks on the Dask cluster whose scheduler wrote "
                                                          "this file (dask scheduler --scheduler-file, "
                                                          "dask-jobqueue, dask-mpi); instead of --scheduler."),
    max_memory: float | None = typer.Option(None, metavar="GIB", show_default=False,
                                            help="For each task of the embedded trainer: " + MAX_MEMORY_HELP
                                            + " Free to change on --resume."),
    report_only: bool = typer.Option(False, help="Rebuild the report of the experiment in --out from its finished "
                                                 "results, with the settings stored with them (a CONFIG, if "
                                                 "given, must be that experiment's)."),
    overwrite: bool = typer.Option(False, help="Start again in an earlier experiment folder: its results are "
                                               "replaced (only what `pyita experiment` wrote there)."),
    quiet: bool = QUIET,
    verbose: bool = VERBOSE,
    log_file: Path | None = LOG_FILE,
) -> None:
    """Paired trials of baseline vs augmented (and force-trained) potentials, with statistics and a report."""
    from pyita.experiment import run_experiment

    overrides = {"data": data, "trials": trials, "subset_size": subset_size, "max_energy": max_energy,
                 "backend": backend, "aenet_bin": aenet_bin and str(aenet_bin), "workers": workers,
                 "scheduler": scheduler, "scheduler_file": scheduler_file and str(scheduler_file),
                 "max_memory": max_memory}
    summary = run_experiment(config_file, preset, overrides, out, resume=resume, overwrite=overwrite,
                             report_only=report_only, progress=not quiet)
    for line in summary["plain_summary"]:   # the report's opening lines: one per condition and metric
        console.print(line, highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")


