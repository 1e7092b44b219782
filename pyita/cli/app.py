"""The ``pyita`` application and what its commands share: the consoles, warnings as one line, the options
several commands take. The commands live beside it, one module per kind of job; ``entry.py`` runs them."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console

from pyita.errors import PyitaError
from pyita.parallel import passive_openmp

passive_openmp()   # before torch loads

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


CALC_HELP = ("Reference calculator: a preset (gfn1-xtb, gfn2-xtb: tblite, pip install 'pyita\\[xtb]'; emt: "
             "ASE EMT for metals) or an ASE calculator as module:Class, optionally with JSON keyword "
             "arguments: 'ase.calculators.emt:EMT{}'.")


THREADS_OPTION = typer.Option(None, help="OpenMP threads per process (default: as the environment says; "
                                         "1 per worker when --workers > 1).")
FOLD_OPTION = typer.Option("auto", help="Evaluate each cell replicated AxBxC times (a k-mesh for Γ-only tblite): "
                                        "auto = a structure's own info 'fold' (the bundled sample has one), "
                                        "none, or e.g. 2x2x1.")
