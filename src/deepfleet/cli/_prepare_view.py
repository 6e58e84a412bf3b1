"""What `deepfleet prepare` shows: a progress bar (samples, samples/s, bytes/s) while the
shards are written, and a table of what was written at the end."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
from rich.progress import Task as BarTask
from rich.table import Table
from rich.text import Text

from deepfleet.cli._app import console

if TYPE_CHECKING:
    from deepfleet.data import Manifest


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1000
    return ""


class _Rates(ProgressColumn):
    """samples/s and bytes/s since the bar started (the fields are set by `update`)."""

    def render(self, task: BarTask) -> Text:
        elapsed = task.elapsed or 0.0
        if elapsed <= 0:
            return Text("")
        rows, data = task.completed / elapsed, task.fields.get("bytes", 0) / elapsed
        return Text(f"{rows:,.0f} samples/s  {_size(data)}/s", style="cyan")


@contextmanager
def prepare_progress() -> Iterator:
    """A callback (rows, bytes, total rows) for write_dataset, drawn as a bar on a terminal."""
    bar = Progress(
        TextColumn("writing shards"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rates(),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task("shards", total=None, bytes=0)

    def update(rows: int, data: int, total: int) -> None:
        bar.update(task, completed=rows, total=total, bytes=data)

    with bar:
        yield update


def _shard_bytes(manifest: Manifest, file: str) -> int:
    if manifest.remote is not None:
        return manifest.remote.store.size(file)
    return (Path(manifest.root) / file).stat().st_size


def summary_table(manifest: Manifest, out: str | Path, seconds: float) -> Table:
    """samples, shards and bytes per split, and the time it took."""
    table = Table(title=f"prepared {out} in {seconds:.1f} s")
    for name in ("split", "samples", "shards", "bytes"):
        table.add_column(name, justify="left" if name == "split" else "right")
    totals = [0, 0, 0]
    for split in manifest.splits:
        shards = manifest.shards(split)
        size = sum(_shard_bytes(manifest, e.file) for e in shards)
        row = [manifest.rows(split), len(shards), size]
        totals = [a + b for a, b in zip(totals, row, strict=True)]
        table.add_row(split, f"{row[0]:,}", str(row[1]), _size(row[2]))
    table.add_row("all", f"{totals[0]:,}", str(totals[1]), _size(totals[2]), style="bold")
    return table


def timer() -> float:
    return time.perf_counter()
