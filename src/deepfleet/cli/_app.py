"""The typer app every command module registers on."""

import typer
from rich.console import Console

from deepfleet.errors import UserError

app = typer.Typer(
    name="deepfleet",
    help="From raw data to a served model, on one CPU or many GPUs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

OVERRIDES_HELP = "Override a job-file key, e.g. --set train.batch_size=128 (repeatable)."


STORAGE_OPTION_HELP = (
    "A setting of a remote URL as KEY=VALUE (endpoint_url, region, connect_timeout, "
    "request_timeout); repeatable. Credentials come from the AWS variables, ~/.aws or the "
    "instance role, never from here."
)


def parse_storage_options(pairs: list[str] | None) -> dict[str, str]:
    """--storage-option KEY=VALUE flags as a dict; a malformed one is a one-line error."""
    options = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--storage-option {pair!r}: expected KEY=VALUE")
        options[name.strip()] = value.strip()
    return options
