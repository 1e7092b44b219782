"""Errors that reach users: each names the file, the line and the problem."""

from __future__ import annotations

from pathlib import Path


class PyitaError(Exception):
    """Base class for errors PyITA reports to users without a traceback."""


class SettingError(PyitaError, ValueError):
    """A setting no run could use (e.g. a hidden-layer spec); a ValueError too, like the format checks of
    ``pyita.io.aenet_inputs``, so either kind of caller catches it."""


def whole_number(value, what: str, minimum: int):
    """``value`` itself when it is a whole number ≥ ``minimum``, else a SettingError naming ``what`` (the one
    check for counts and seeds given to the CLI or the Python API: a float 2.0 passes, True does not)."""
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or value < minimum:
        raise SettingError(f"{what} must be a whole number ≥ {minimum}, got {value!r}")
    return value


class InputError(PyitaError):
    """Bad input data: knows where it came from so the message can say so."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None):
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self._format())

    def __reduce__(self):  # rebuilt from its parts, so it crosses process boundaries unchanged
        return type(self), (self.problem, self.path, self.line)

    def _format(self) -> str:
        """``path, line N: problem``; without a path (a setting, not a file, is at fault) the problem alone."""
        where = [part for part in (self.path, None if self.line is None else f"line {self.line}") if part]
        return f"{', '.join(where)}: {self.problem}" if where else self.problem


class Interrupted(BaseException):
    """A termination signal, raised in the main thread so that every cleanup on the way out runs."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by signal {signum}")
