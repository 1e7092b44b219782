"""The ``pyita`` application and what its commands share: the consoles, warnings as one line, the options
every command takes (-q, -v, --log-file) and the types of choice options. The commands live beside it, one
module per kind of job; ``entry.py`` runs them."""

from __future__ import annotations

import inspect
import re
import shlex
import sys
import warnings
from pathlib import Path
from typing import Literal

import typer

from pyita import progress
from pyita.choices import (AENET_DESCRIPTORS, AENET_METHODS, BACKENDS, DEVICES, ENERGY_NORMALIZATIONS, ENSEMBLES,
                           FORCE_FRACTION_OF, FORMATS, METHODS, PRESETS, STRATEGIES, WEIGHT_INITS)
from pyita.architecture import ChebyshevSetup
from pyita.errors import PyitaError
from pyita.parallel import passive_openmp

passive_openmp()   # before torch loads

app = typer.Typer(
    name="pyita",
    help="Taylor-expansion data augmentation for neural-network interatomic potentials.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# What the commands print goes to the log file too (--log-file), as plain text stamped with the time.
err_console = progress.LoggedConsole(stderr=True)
console = progress.LoggedConsole()


def _show_warning(message, category, filename, lineno, file=None, line=None):
    from rich.markup import escape  # messages hold brackets, e.g. pip install 'pyita[xtb]', file.xyz[3]

    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)


warnings.showwarning = _show_warning


def choice(values: tuple[str, ...]):
    """The type of an option taking one of ``values`` (their one home: ``pyita.choices``): ``--help`` lists
    them, the shell completes them, anything else is a one-line usage error. A Literal rather than an Enum, so
    the command receives a plain string, which the settings record and pickle as they are."""
    return Literal[tuple(values)]


Method = choice(METHODS)
ForceFractionOf = choice(FORCE_FRACTION_OF)
EnergyNormalization = choice(ENERGY_NORMALIZATIONS)
WeightInit = choice(WEIGHT_INITS)
Strategy = choice(STRATEGIES)
Format = choice(FORMATS)
Preset = choice(PRESETS)
Backend = choice(BACKENDS)
AenetDescriptor = choice(AENET_DESCRIPTORS)
AenetMethod = choice(AENET_METHODS)
Ensemble = choice(ENSEMBLES)


def _complete_device(incomplete: str) -> list[str]:
    return [d for d in DEVICES if d.startswith(incomplete)]


#: A device is a choice the shell completes, but stays free text: torch also takes cuda:1.
DEVICE_OPTION = typer.Option("auto", autocompletion=_complete_device,
                             help="Device to compute on: auto (CUDA when present), cpu, cuda or cuda:N.")


def _set_verbose(value: bool) -> bool:
    progress.configure(verbose=value)
    if value:
        warnings.simplefilter("always")   # every occurrence, not only the first at each place
    return value


def _open_log(value: Path | None) -> Path | None:
    progress.close_log()
    if value is not None:
        try:
            progress.configure(log_file=value)
        except OSError as exc:
            raise typer.BadParameter(f"cannot append to {value}: {exc.strerror or exc}") from None
        progress.log_line("pyita " + shlex.join(sys.argv[1:]))
    return value


QUIET_HELP = "Show no progress (warnings, errors and the closing summary still print)."
QUIET = typer.Option(False, "--quiet", "-q", help=QUIET_HELP)
VERBOSE = typer.Option(False, "--verbose", "-v", callback=_set_verbose,
                       help="Report more: a progress line for every finished step when not at a terminal, every "
                            "repeated warning, and the traceback of an unforeseen error.")
LOG_FILE = typer.Option(None, "--log-file", callback=_open_log, dir_okay=False, metavar="PATH",
                        help="Also append the progress lines, warnings, errors and closing summary to this file, "
                             "each stamped with the time (its folder must exist).")


def tidy_help(typer_app: typer.Typer) -> None:
    """Every command's help from its docstring with the source's line breaks undone (typer's rich help keeps
    them, so a description broke mid-sentence), recursively for command groups."""
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            paragraphs = inspect.cleandoc(info.callback.__doc__).split("\n\n")
            info.help = "\n\n".join(re.sub(r"\s*\n\s*", " ", p) for p in paragraphs)
    for group in typer_app.registered_groups:
        tidy_help(group.typer_instance)


def _version(value: bool) -> None:
    if value:
        from pyita import __version__

        console.print(f"pyita {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Taylor-expansion data augmentation, training and evaluation of neural-network potentials."""


def done(what: str, out, seconds: float) -> None:
    """The closing line of a command that wrote ``out``: what it made, where, and how long it took."""
    console.print(f"{what} → {out}  [{seconds:.1f} s]")


def ask_if_missing(value, name: str, prompt: str, kind):
    """The paper's program asked interactively; do so only when a person is at the terminal."""
    if value is not None:
        return value
    if not sys.stdin.isatty():
        raise PyitaError(f"--{name} is required (stdin is not a terminal, so PyITA cannot ask for it)")
    return typer.prompt(prompt, type=kind)


CALC_HELP = ("Reference calculator: a preset (gfn1-xtb or gfn2-xtb through tblite, pip install 'pyita\\[xtb]'; "
             "emt, ASE's EMT for metals) or an ASE calculator as module:Class, optionally with JSON keyword "
             "arguments, e.g. 'ase.calculators.emt:EMT{}'.")


THREADS_OPTION = typer.Option(None, show_default=False,
                              help="OpenMP threads per process. Default: as the environment says, and 1 per worker "
                                   "when --workers is above 1.")
FOLD_OPTION = typer.Option("auto", help="Evaluate each cell replicated AxBxC times (a k-mesh for Γ-only tblite): "
                                        "auto takes a structure's own info 'fold' (the bundled sample has one), "
                                        "none replicates nothing, and e.g. 2x2x1 is used for every structure.")
ENERGY_KEY_OPTION = typer.Option(None, "--energy-key", show_default=False,
                                 help="Key of the reference energy in an extended-XYZ or other ASE file. Default: "
                                      "energy, else MACE's REF_energy.")
FORCES_KEY_OPTION = typer.Option(None, "--forces-key", show_default=False,
                                 help="Key of the reference forces in an extended-XYZ or other ASE file. Default: "
                                      "forces, else MACE's REF_forces.")


def chebyshev_setup(radial_rc: float, radial_n: int, angular_rc: float, angular_n: int) -> ChebyshevSetup:
    try:
        return ChebyshevSetup(radial_rc=radial_rc, radial_n=radial_n, angular_rc=angular_rc, angular_n=angular_n)
    except ValueError as exc:
        raise PyitaError(str(exc)) from None


# The Chebyshev descriptor's settings (`pyita aenet prepare`, and the .stp files `pyita augment` writes), with the
# defaults of their one home, ChebyshevSetup (aenet's TiO2 example).
RADIAL_RC = typer.Option(ChebyshevSetup.radial_rc, help="Chebyshev radial cutoff in Å.")
RADIAL_N = typer.Option(ChebyshevSetup.radial_n, help="Chebyshev radial order.")
ANGULAR_RC = typer.Option(ChebyshevSetup.angular_rc, help="Chebyshev angular cutoff in Å.")
ANGULAR_N = typer.Option(ChebyshevSetup.angular_n, help="Chebyshev angular order.")
TYPES_OPTION = typer.Option(None, show_default=False,
                            help="Atomic reference energies in eV, e.g. Ti=-1626.67,O=-433.23. Default: the input "
                                 "generate.in's, else fitted by least squares.")
