"""A rich progress bar over the timed steps; silent in tests and when output is not a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class BenchProgress:
    """One bar per measured phase (warm-up, repeats, batch sizes)."""

    def __init__(self, console: Console | None = None, enabled: bool | None = None) -> None:
        console = console or Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not self.enabled,
        )
        self._task = None
        self._progress.start()

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, steps: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, steps)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message)

    def stop(self) -> None:
        self._progress.stop()


def silent_progress() -> BenchProgress:
    return BenchProgress(Console(quiet=True), enabled=False)
