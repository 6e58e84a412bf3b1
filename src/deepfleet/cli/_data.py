"""prepare and verify-data: a data set to verified Parquet shards, and checking them later."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from deepfleet.cli._app import STORAGE_OPTION_HELP, app, console, parse_storage_options
from deepfleet.errors import UserError

if TYPE_CHECKING:
    from deepfleet.config import DataSection

# Each command imports what it runs when it runs: `deepfleet --help` loads none of it.


def _data_section(**values) -> DataSection:
    """The flags as a [data] table, checked by the same rules as a job file."""
    from pydantic import ValidationError

    from deepfleet.config import DataSection, format_validation_error

    try:
        return DataSection(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as err:
        raise UserError(format_validation_error(err, prefix="data")) from None


@app.command()
def prepare(
    source: str = typer.Argument(
        ...,
        help="digits, diabetes, python-stdlib, a path (IDX folder, CIFAR-10 binary folder "
        "or archive, image folder, .npz, .npy, .parquet, .csv), or "
        "KIND:PATH (mnist, fashion-mnist, cifar10, images, npz, npy, "
        "table, text).",
    ),
    out: str = typer.Option(
        ...,
        "--out",
        help="New folder, or a URL (s3://bucket/prefix), for shards and manifest.json.",
    ),
    shards: int = typer.Option(4, "--shards", min=1, help="Number of training shards."),
    val_fraction: float = typer.Option(0.1, "--val", help="Share of samples for validation."),
    test_fraction: float = typer.Option(0.2, "--test", help="Share of samples for testing."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split."),
    key: str = typer.Option(
        None,
        "--key",
        help="Encrypt with this data key (a key file from `deepfleet keys new`, or env:NAME).",
    ),
    label_column: str = typer.Option(None, "--label-column", help="Tables: the label column."),
    image_size: tuple[int, int] = typer.Option(
        None, "--image-size", help="Image folders: resize to HEIGHT WIDTH."
    ),
    image_format: str = typer.Option(
        None,
        "--image-format",
        help="Image folders: decoded (pixels at one size), encoded (the files' bytes, "
        "decoded while streaming) or auto (decoded up to 64x64 pixels; the default).",
    ),
    workers: int = typer.Option(None, "--workers", min=1, help="Shard-writing processes."),
    task: str = typer.Option(
        "classification",
        "--task",
        help="What the targets are for: classification, multilabel, regression, causal_lm "
        "(text sources), or module.path:factory.",
    ),
    seq_len: int = typer.Option(None, "--seq-len", help="Text: tokens per sequence."),
    vocab_size: int = typer.Option(None, "--vocab-size", help="Text: BPE vocabulary size."),
    tokenizer: Path = typer.Option(
        None, "--tokenizer", help="Text: a tokenizer.json to use instead of training one."
    ),
    max_bytes: int = typer.Option(None, "--max-bytes", help="Text: read at most this much."),
    storage_option: list[str] = typer.Option(None, "--storage-option", help=STORAGE_OPTION_HELP),
    cache_dir: str = typer.Option(
        None, "--cache-dir", help="URL outputs: the node's cache folder (staged there)."
    ),
) -> None:
    """Split a data set into verified Parquet shards with a manifest."""
    data = _data_section(
        source=source,
        shards=shards,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        key=key,
        label_column=label_column,
        image_size=list(image_size) if image_size else None,
        image_format=image_format,
        workers=workers,
        seq_len=seq_len,
        vocab_size=vocab_size,
        tokenizer=str(tokenizer) if tokenizer else None,
        max_bytes=max_bytes,
        storage_options=parse_storage_options(storage_option),
        cache_dir=cache_dir,
    )
    from deepfleet.config import TaskSection
    from deepfleet.data import prepare_from_config

    if (source.startswith("text:") or source == "python-stdlib") and task == "classification":
        task = "causal_lm"  # text gives token sequences: the one task that reads them
    from deepfleet.cli._prepare_view import prepare_progress, summary_table, timer

    started = timer()
    with prepare_progress() as progress:
        manifest = prepare_from_config(
            data, out, seed, TaskSection(name=task, path=str(Path.cwd())), progress=progress
        )
    rows = ", ".join(f"{s} {manifest.rows(s)}" for s in manifest.splits)
    encrypted = f", encrypted ({manifest.encryption['key_id']})" if manifest.encryption else ""
    shown = manifest.root if manifest.remote else out  # a URL as printed: no userinfo
    console.print(summary_table(manifest, shown, timer() - started))
    console.print(f"prepared {shown}: {rows}{encrypted}")


@app.command("verify-data")
def verify_data(
    folder: str = typer.Argument(..., help="A prepared data set: a folder or a URL."),
    key: str = typer.Option(
        None,
        "--key",
        help="Data key of encrypted shards (a key file, or "
        "env:NAME; default $DEEPFLEET_DATA_KEY): also checks the "
        "manifest's authentication.",
    ),
    storage_option: list[str] = typer.Option(None, "--storage-option", help=STORAGE_OPTION_HELP),
) -> None:
    """Check manifest.json against its own digest and every shard against its sha256 and row
    count; names the first problem."""
    from deepfleet.data import verify_dataset

    manifest = verify_dataset(folder, parse_storage_options(storage_option))
    parts = [
        f"{s} {len(manifest.shards(s))} shards / {manifest.rows(s)} rows" for s in manifest.splits
    ]
    sealed = ""
    if manifest.encryption:
        # Imported only here: the reader module brings torch, which plain shards never need.
        from deepfleet.data import dataset_key, load_data_key

        checked = load_data_key(key) is not None and dataset_key(manifest, key) is not None
        sealed = (
            "; manifest authenticated by the data key"
            if checked
            else "; encrypted: give --key to check the manifest's authentication"
        )
    shown = manifest.root if manifest.remote else folder
    console.print(f"ok {shown}: {', '.join(parts)}{sealed}")
