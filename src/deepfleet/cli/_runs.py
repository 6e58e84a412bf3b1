"""`deepfleet runs ls` and `deepfleet runs compare`: the run folders as tables, curves overlaid."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepfleet.cli._app import app, console

runs_app = typer.Typer(help="List run folders and compare their results.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

# Each command imports what it reads when it runs: `deepfleet --help` loads none of it.


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"


def _value(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _status(row) -> str:
    if row.status == "failed" and row.failure:
        return f"failed: {row.failure.split(':', 1)[0]}"  # the stage; the reason follows the table
    return row.status + (", stopped early" if row.stopped_early else "")


@runs_app.command("ls")
def ls(
    folder: Path = typer.Argument(Path("runs"), help="The folder holding run folders."),
) -> None:
    """One row per run folder: task, strategy, epochs, best metric, wall time, status."""
    from deepfleet.track._runs import list_runs

    rows = list_runs(folder)
    if not rows:
        console.print(f"no run folders in {folder}")
        return
    table = Table(title=f"runs in {folder}")
    table.add_column("name", no_wrap=True)
    table.add_column("task")
    table.add_column("strategy")
    table.add_column("epochs", justify="right")
    table.add_column("best")
    table.add_column("wall time", justify="right")
    table.add_column("status")
    for row in rows:
        strategy = row.strategy or ""
        if row.strategy and row.world_size and row.world_size > 1:
            strategy += f" x{row.world_size}"
        best = f"{row.monitor} {_value(row.best_value)}" if row.best_value is not None else ""
        table.add_row(
            row.name,
            row.task,
            strategy,
            "" if row.epochs is None else str(row.epochs),
            best,
            _duration(row.seconds),
            _status(row),
        )
    console.print(table)
    for row in rows:
        if row.failure:
            console.print(f"{row.name}: {row.failure}", markup=False, highlight=False)


@runs_app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="The run folders to compare."),
    out: Path = typer.Option(
        Path("runs-compare"), "--out", help="Where to write curves.png and compare.json."
    ),
) -> None:
    """Final metrics side by side, and train/val loss and the monitored metric per epoch."""
    from deepfleet.track._compare import compare_runs

    result = compare_runs(runs, out)
    splits = {run.split for run in result.runs if run.split}
    table = Table(title="final metrics" + (f" ({splits.pop()} split)" if len(splits) == 1 else ""))
    table.add_column("metric")
    for run in result.runs:
        table.add_column(run.row.name, justify="right")
    for column in result.columns:
        table.add_row(column, *(_value(run.metrics.get(column)) for run in result.runs))
    table.add_row(
        "best (monitored)",
        *(
            f"{run.row.monitor} {_value(run.row.best_value)}"
            if run.row.best_value is not None
            else ""
            for run in result.runs
        ),
    )
    console.print(table)
    console.print(f"curves: {result.curves}")
    console.print(f"table: {result.table}")
