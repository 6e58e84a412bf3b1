"""`deepfleet keys new`: a data-encryption key, or with --signing an EC P-256 signing key pair."""

from __future__ import annotations

from pathlib import Path

import typer

from deepfleet.cli._app import app, console

keys = typer.Typer(help="Create keys for data encryption and bundle signing.", no_args_is_help=True)
app.add_typer(keys, name="keys")


@keys.command("new")
def new(
    out: Path = typer.Option(
        ..., "--out", help="Where to write the key (a file, or a folder for --signing's key pair)."
    ),
    signing: bool = typer.Option(
        False, "--signing", help="An EC P-256 key pair for signing bundles."
    ),
) -> None:
    """Create a new key; existing files are never overwritten."""
    if signing:
        from deepfleet.deploy import new_signing_key

        private, public = new_signing_key(out)
        console.print(f"signing key: {private}\npublic key: {public}")
    else:
        from deepfleet.data import new_data_key

        path = new_data_key(out)
        console.print(f"data key: {path}")
