"""prepare: a [data] table (or CLI flags) to a folder of verified shards."""

from __future__ import annotations

from pathlib import Path

from deepfleet.config import DataSection, TaskSection
from deepfleet.data._crypto import load_data_key
from deepfleet.data._manifest import Manifest
from deepfleet.data._remote import cache_settings
from deepfleet.data._sources import SourceOptions, load_source
from deepfleet.data._text import TextOptions
from deepfleet.data._upload import remote_output
from deepfleet.data._writer import Progress, write_dataset
from deepfleet.errors import UserError
from deepfleet.storage import is_remote
from deepfleet.tasks import build_task


def prepare_from_config(
    data: DataSection,
    out: str | Path,
    seed: int,
    task: TaskSection | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Read the source, split it, and write shards + manifest.json into the new folder `out`
    (or a URL: data.storage_options and the cache settings say how to reach and stage it).

    Shards are encrypted when data.key is set (a key file or env:NAME). The key is loaded
    before the source, so a bad key costs nothing. `progress(rows, bytes, total)` is called
    as shards are written.
    """
    key = load_data_key(data.key) if data.key else None
    if data.key and key is None:
        raise UserError(f"data.key: {data.key} gives no key")
    if is_remote(out):  # a missing bucket or a data set already there: before the source
        remote_output(str(out), data.storage_options)
    task = task or TaskSection()
    bound = build_task(task.name, None, task.path)
    text = TextOptions(data.seq_len, data.vocab_size, data.tokenizer, data.max_bytes)
    samples = load_source(
        data.source,
        SourceOptions(data.label_column, data.image_size, data.image_format, text, bound),
    )
    if samples.tokens and bound.name in ("classification", "multilabel", "regression"):
        raise UserError(
            f"data.source {data.source!r} gives token sequences, which need task.name = "
            f'"causal_lm" (the job says {task.name!r})'
        )
    return write_dataset(
        samples,
        out,
        shards=data.shards,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=seed,
        source={"name": data.source, "description": samples.description},
        workers=data.workers,
        key=key,
        task=bound.name,
        stratify=bound.stratify,
        progress=progress,
        storage_options=data.storage_options,
        cache=cache_settings(data),
    )
