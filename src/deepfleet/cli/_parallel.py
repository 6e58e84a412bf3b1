"""selftest: a short distributed check of this machine, printed as a table."""

from __future__ import annotations

import typer
from rich.table import Table

from deepfleet.cli._app import app, console
from deepfleet.errors import UserError


@app.command()
def selftest(
    nproc: int = typer.Option(2, "--nproc", help="Local processes to start (at least 2)."),
) -> None:
    """All-reduce, then a few steps of ddp, fsdp and pipeline against one process."""
    if nproc < 2:
        raise UserError("--nproc must be at least 2 for a distributed self-test")
    from deepfleet.selftest import run_selftest  # torch and the trainer: only when running

    report = run_selftest(nproc)
    table = Table(
        title=f"selftest: {report['world_size']} processes, {report['backend']} "
        f"on {report['device']}"
    )
    for column in ("check", "result", "seconds", "detail"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for row in report["rows"]:
        table.add_row(
            row["check"], "ok" if row["ok"] else "FAILED", f"{row['seconds']:.3f}", row["detail"]
        )
    console.print(table)
    if not all(row["ok"] for row in report["rows"]):
        raise typer.Exit(1)
