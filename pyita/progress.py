"""One progress-bar style for all long work: count, rate and time left, on stderr."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class _Rate(TextColumn):
    """Items per second, which rich's own speed column only offers for bytes."""

    def __init__(self, unit: str):
        super().__init__("")
        self.unit = unit

    def render(self, task):
        speed = task.finished_speed or task.speed
        from rich.text import Text

        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s")


@contextmanager
def progress_bar(total: int | None, description: str, unit: str = "it", enabled: bool = True):
    """Yield ``advance(n=1, **fields)``; a no-op when disabled (tests, --quiet, non-interactive logs)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:  # a bar's last frame is noise in logs and before errors
        yield lambda n=1, **fields: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(unit),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields):
            status = "  ".join(f"{k} {v}" for k, v in fields.items())
            progress.update(task, advance=n, **({"status": status} if fields else {}))

        yield advance
