"""Where training reports go: metrics.jsonl always, and a progress bar or plain lines."""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

# Records waiting for the loggers at most; a writer beyond that waits (bounded memory).
_QUEUE = 10_000
# How long closing waits for the loggers to take what is queued (an MLflow client may be
# retrying a request); past that the rest is left to metrics.jsonl, with one line.
_CLOSE_WAIT_S = 300.0
_STOP = object()


class MetricsLog:
    """Appends one JSON object per line; each line is flushed so a crash loses nothing logged.

    Each record written is then handed to `loggers` (the [track] loggers: TensorBoard, CSV,
    MLflow), copies of metrics.jsonl, in order, from a thread of their own: a logger's work
    (an HTTP request to a tracking server, an event file flush) never holds a training step.
    A logger that raises is reported once on stderr and switched off; the JSON lines and the
    training go on. close() waits for the loggers to take every queued record.
    """

    def __init__(self, path: Path | None, loggers: Sequence[RecordLogger] = ()) -> None:
        self.path = path
        self._handle = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._loggers = list(loggers) if path else []
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE)
        self._thread: threading.Thread | None = None
        if self._loggers:
            self._thread = threading.Thread(target=self._deliver, name="loggers", daemon=True)
            self._thread.start()

    def write(self, record: dict[str, Any]) -> None:
        if self._handle is None:
            return
        line = {"time": time.time(), **record}
        self._handle.write(json.dumps(line) + "\n")
        self._handle.flush()
        if self._thread is not None:
            self._queue.put(line)

    def _deliver(self) -> None:
        """The loggers' thread: each record to each logger, then close them at _STOP."""
        while (line := self._queue.get()) is not _STOP:
            for logger in list(self._loggers):
                try:
                    logger.write(line)
                except Exception as err:
                    self._drop(logger, err)
        for logger in list(self._loggers):
            try:
                logger.close()
            except Exception as err:
                self._drop(logger, err)
        self._loggers = []

    def _drop(self, logger: RecordLogger, err: Exception) -> None:
        self._loggers.remove(logger)
        detail = " ".join(str(err).split()) or type(err).__name__
        print(
            f"tracking: {logger.name} logger failed ({type(err).__name__}: {detail}); "
            "records stay in metrics.jsonl",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(Exception):
            logger.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(_CLOSE_WAIT_S)
            if self._thread.is_alive():
                print(
                    f"tracking: loggers still busy after {_CLOSE_WAIT_S:.0f} s; "
                    "the remaining records are in metrics.jsonl only",
                    file=sys.stderr,
                    flush=True,
                )
            self._thread = None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RecordLogger(Protocol):
    """A copy of the records in another format (deepfleet.track._loggers)."""

    name: str

    def write(self, record: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class ProgressSink(Protocol):
    def start(self, total_steps: int) -> None: ...
    def note(self, text: str) -> None: ...
    def advance(self, description: str) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def stop(self) -> None: ...


_SHORT = {"accuracy": "acc", "perplexity": "ppl"}
_NOT_FIGURES = {"train_loss", "val_loss"}


def _figures(r: dict[str, Any], prefix: str) -> str:
    """The task's figures with `prefix` (train_ or val_), short names, four decimals."""
    shown = []
    for key, value in r.items():
        if key.startswith(prefix) and key not in _NOT_FIGURES and isinstance(value, float):
            name = key.removeprefix(prefix)
            shown.append(f" {prefix}{_SHORT.get(name, name)}={value:.4f}")
    return "".join(shown).replace(" train_", " ")


def _epoch_line(r: dict[str, Any]) -> str:
    val = f" val_loss={r['val_loss']:.4f}" if r.get("val_loss") is not None else ""
    return (
        f"epoch {r['epoch']}/{r['epochs']} [{r['phase']}] "
        f"loss={r['train_loss']:.4f}{_figures(r, 'train_')}{val}{_figures(r, 'val_')} "
        f"lr={r['lr']:.2e} {r['samples_per_s']:.0f} samples/s"
    )


class PlainProgress:
    """Plain log lines, one per epoch: for pipes, CI logs and non-zero ranks."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout

    def start(self, total_steps: int) -> None:
        pass

    def note(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def advance(self, description: str) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        print(_epoch_line(record), file=self.stream, flush=True)

    def stop(self) -> None:
        pass


class RichProgress:
    """A rich progress bar over all optimizer steps, with a line per epoch above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._task = None

    def start(self, total_steps: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("training", total=total_steps)

    def note(self, text: str) -> None:
        self._progress.console.print(text, markup=False, highlight=False)

    def advance(self, description: str) -> None:
        self._progress.update(self._task, advance=1, description=description)

    def epoch(self, record: dict[str, Any]) -> None:
        self._progress.console.print(_epoch_line(record))

    def stop(self) -> None:
        self._progress.stop()


def default_progress() -> ProgressSink:
    return RichProgress() if sys.stdout.isatty() else PlainProgress()


class NullProgress(PlainProgress):
    """Prints nothing (tests, library use)."""

    def note(self, text: str) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        pass
