"""The one progress-bar style every long job uses: count, rate and ETA, on stderr."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Console for progress and status messages; results go to stdout so ``--json`` stays clean.
err_console = Console(stderr=True)


def stdout_console() -> Console:
    """Console for result tables on stdout.

    A terminal gets its own width; piped or redirected output (CI logs, ``| less``) gets 160
    columns instead of rich's 80, so that wide tables keep their names whole.
    """
    console = Console()
    return console if console.is_terminal else Console(width=160)


def make_progress(unit: str = "it", transient: bool = False, console: Console | None = None,
                  bar_width: int = 40) -> Progress:
    """A rich Progress with description, bar, done/total, percent, rate (``unit``/s), elapsed and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=bar_width),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or err_console,
        transient=transient,
    )


class _RateColumn(TextColumn):
    """Items per second, blank until rich has a speed estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__("")
        self.unit = unit

    def render(self, task):  # type: ignore[override]
        from rich.text import Text

        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed")
