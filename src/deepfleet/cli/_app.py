"""The typer app every command module registers on."""

import typer
from rich.console import Console

app = typer.Typer(
    name="deepfleet",
    help="From raw data to a served model, on one CPU or many GPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

OVERRIDES_HELP = "Override a job-file key, e.g. --set train.batch_size=128 (repeatable)."
