"""Console-script entry point: runs the application with one clear line for every error."""

from __future__ import annotations

import os
import signal
import sys

import typer

# Importing the command modules registers their commands with the application, in the order --help lists them.
from pyita.cli import structures, dynamics, training, recommending, aenet  # noqa: F401
from pyita.cli.app import app, err_console, tidy_help
from pyita.errors import Interrupted, PyitaError
from pyita.progress import verbose

tidy_help(app)


def _error(message: str) -> None:
    """One line, whatever the message holds (a file name may hold a line break)."""
    from rich.markup import escape

    message = message.replace("\r", "\\r").replace("\n", "\\n")
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _usage_error(exc: typer.TyperException) -> int:
    """A usage error as one line naming the command and where its help is (click would print three, in a box),
    e.g. ``error: pyita train: No such option: --iteration (Possible options: --iterations); see pyita train
    --help``; returns the exit status (2 for usage errors)."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "pyita"
    message = exc.format_message().strip().rstrip(".").replace("Value error, ", "")
    if message:   # (none when the help was shown for a command given no arguments)
        _error(f"{command}: {message}; see {command} --help")
    return getattr(exc, "exit_code", 2)


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
        # usage errors come here, to be said in one line; "pyita" also for python -m pyita (shell completion)
        status = app(standalone_mode=False, prog_name="pyita")
        if isinstance(status, int) and status:   # typer.Exit(code) (e.g. from --help: 0)
            sys.exit(status)
    except typer.TyperException as exc:   # click's errors: a bad option or value (exit 2), a file it could not open
        sys.exit(_usage_error(exc))
    except typer.Abort:   # end of input at a prompt
        _error("aborted")
        sys.exit(1)
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
        if os.environ.get("PYITA_TRACEBACK") or verbose():
            raise
        _error(f"unexpected {type(exc).__name__}: {exc} — please report this PyITA bug with the command line "
               "(--verbose or PYITA_TRACEBACK=1 shows the traceback)")
        sys.exit(2)


if __name__ == "__main__":
    main()

