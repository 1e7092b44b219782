"""Progress of long work, on stderr: on a terminal a bar that keeps its count and time left at 80 columns; without
one (nohup, CI logs, tee) plain lines such as ``experiment: 3/8 tasks, 2.1/min, ETA 2m 24s``, one per finished
step but at most every PLAIN_EVERY seconds, and always the last. A ``--log-file`` gets the plain lines too, with
what the command prints (``LoggedConsole``), its warnings and its error, each line stamped with the time."""

from __future__ import annotations

import atexit
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.table import Column
from rich.text import Text

#: Seconds between two plain progress lines (``--verbose``: a line for every finished step).
PLAIN_EVERY = 30.0


@dataclass
class _Output:
    """What the command line asked for: every step's line (verbose), and the log file, if any."""

    verbose: bool = False
    log: TextIO | None = None
    log_console: Console | None = None


_OUTPUT = _Output()


def configure(verbose: bool | None = None, log_file: str | Path | None = None) -> None:
    """Set ``--verbose`` and open ``--log-file`` for appending (its folder must exist: a typo should not make
    one). Raises OSError when the file cannot be opened."""
    if verbose is not None:
        _OUTPUT.verbose = verbose
    if log_file is not None:
        close_log()
        handle = open(log_file, "a", encoding="utf-8", buffering=1)   # line-buffered: readable while running
        atexit.register(close_log)
        _OUTPUT.log = handle
        _OUTPUT.log_console = Console(file=handle, color_system=None, force_terminal=False, width=200,
                                      highlight=False, emoji=False)


def close_log() -> None:
    if _OUTPUT.log is not None:
        _OUTPUT.log.close()
    _OUTPUT.log = _OUTPUT.log_console = None


def verbose() -> bool:
    return _OUTPUT.verbose


def _stamp() -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def log_line(text: str) -> None:
    """One record in the log file (when there is one), stamped with the time."""
    if _OUTPUT.log is not None:
        _OUTPUT.log.write(f"{_stamp()} {text}\n")


class LoggedConsole(Console):
    """A rich console whose output is copied, as plain text stamped with the time, into the log file."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*objects, **kwargs)
        log = _OUTPUT.log_console
        if log is not None:
            log.print(_stamp(), end=" ", highlight=False)
            log.print(*objects, **kwargs)


def sig(value: float, digits: int = 3) -> str:
    """``value`` with ``digits`` significant figures, so a small error never shows as 0.00 (0.0213 → 0.0213,
    12.34 → 12.3, 1234.5 → 1234: no exponent above 1000)."""
    if value is None or not math.isfinite(value):
        return "nan" if value is None or math.isnan(value) else f"{value}"
    if value != 0 and abs(value) >= 10 ** digits:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    """``24s``, ``2m 24s``, ``1h 05m``: short enough for a progress line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def rate(per_second: float | None) -> str:
    """Items per second, or per minute for slow work (tasks of minutes): ``12.5/s``, ``2.1/min``."""
    if not per_second:
        return "–/s"
    return f"{sig(per_second)}/s" if per_second >= 1 else f"{sig(per_second * 60)}/min"


def _status(fields: dict) -> str:
    return "  ".join(f"{k} {v}" for k, v in fields.items())


class PlainProgress:
    """Progress as lines of text: one when a step finishes and PLAIN_EVERY seconds have passed since the last
    (every step with --verbose), and always when the last step finishes. Steps advanced ``before=True`` (a
    resumed run's earlier epochs) were done before the start: they count, but not in the rate."""

    def __init__(self, total: int | None, description: str, unit: str, show: bool, clock=time.monotonic,
                 every: float | None = None):
        self.total, self.description, self.unit, self.show = total, description, unit, show
        self.clock = clock
        self.every = (0.0 if _OUTPUT.verbose else PLAIN_EVERY) if every is None else every
        self.start = self.last = clock()
        self.count = self.base = 0
        self.status = ""
        self.lines: list[str] = []

    def advance(self, n: int = 1, before: bool = False, **fields) -> None:
        now = self.clock()
        self.count += n
        if before:
            self.base += n
            return
        if fields:
            self.status = _status(fields)
        finished = self.total is not None and self.count >= self.total
        if n and (finished or now - self.last >= self.every):
            self.last = now
            self.emit(self.line(now))

    def line(self, now: float) -> str:
        elapsed = now - self.start
        speed = (self.count - self.base) / elapsed if elapsed > 0 else None
        count = f"{self.count}/{self.total}" if self.total is not None else f"{self.count}"
        text = f"{self.description}: {count} {self.unit}, {rate(speed)}"
        if self.total is not None and self.count >= self.total:
            text += f", done in {duration(elapsed)}"
        elif self.total is not None and speed:
            text += f", ETA {duration((self.total - self.count) / speed)}"
        return text + (f" — {self.status}" if self.status else "")

    def emit(self, text: str) -> None:
        self.lines.append(text)
        if self.show:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        log_line(text)


class _Count(ProgressColumn):
    """``123/500 epochs``."""

    def __init__(self, unit: str):
        super().__init__(table_column=Column(no_wrap=True))
        self.unit = unit

    def render(self, task) -> Text:
        total = "?" if task.total is None else f"{task.total:.0f}"
        return Text(f"{task.completed:.0f}/{total} {self.unit}")


class _Rate(ProgressColumn):
    """Items per second or per minute (rich's own speed column only offers bytes)."""

    def __init__(self):
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task) -> Text:
        return Text(rate(task.finished_speed or task.speed))


class _Time(ProgressColumn):
    """``ETA 2m 24s`` while running, ``done in 3m 10s`` at the end."""

    def __init__(self):
        super().__init__(table_column=Column(no_wrap=True))

    def render(self, task) -> Text:
        if task.finished:
            return Text(f"done in {duration(task.finished_time or task.elapsed or 0)}")
        remaining = task.time_remaining
        return Text("ETA " + ("–" if remaining is None else duration(remaining)))


class _Status(ProgressColumn):
    """The caller's fields (e.g. training errors): the one part cut short, with an ellipsis, when the line is
    too long for the terminal. Its column may shrink (wrapable), its text never wraps."""

    def render(self, task) -> Text:
        return Text(task.fields.get("status", ""), no_wrap=True, overflow="ellipsis")


def bar_columns(description: str, unit: str, width: int) -> list[ProgressColumn]:
    """The bar's columns: description, bar, count, rate and time never shrink; the bar is narrower on a narrow
    terminal (10 to 40 characters), and the status takes what is left."""
    bar = max(10, min(40, (width - 40 - len(description)) // 3))
    return [TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=bar, table_column=Column(no_wrap=True, width=bar)), _Count(unit), _Rate(), _Time(),
            _Status()]


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "it", enabled: bool = True,
                 console: Console | None = None):
    """Yield ``advance(n=1, before=False, **fields)``: a bar on a terminal, plain lines without one, nothing when
    disabled (tests, --quiet) except the lines a log file gets. ``fields`` are shown beside the count
    (``train 12.3/15.1``); ``before=True`` counts steps done before this run (a resumed training's epochs)."""
    console = console or Console(stderr=True)
    terminal = enabled and console.is_terminal
    if not enabled and _OUTPUT.log is None:
        yield lambda n=1, before=False, **fields: None
        return
    plain = PlainProgress(total, description, unit, show=enabled and not terminal)
    if not terminal:
        yield plain.advance
        return
    with Progress(*bar_columns(description, unit, console.width), console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, before: bool = False, **fields):
            if before:   # not in the speed: rich's samples start after them
                progress.reset(task, total=total, completed=plain.count + n)
            else:
                progress.update(task, advance=n, **({"status": _status(fields)} if fields else {}))
            plain.advance(n, before, **fields)

        yield advance
