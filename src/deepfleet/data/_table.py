"""A Parquet or CSV table: numeric feature columns and target columns, read in record batches.

The features go, a batch at a time, into a raw float32 temporary file that the shard writer's
workers memory-map; only the targets (and ids) are kept in memory, one value a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from deepfleet.data._rows import MappedArray, SpillFolder
from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

SUFFIXES = (".parquet", ".pq", ".csv")
_BATCH_ROWS = 65536


def _batches(path: Path) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    try:
        if path.suffix.lower() == ".csv":
            reader = pacsv.open_csv(path)
            return reader.schema, iter(reader)
        handle = pq.ParquetFile(path)
        return handle.schema_arrow, handle.iter_batches(batch_size=_BATCH_ROWS)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: cannot read the table ({str(err).splitlines()[0]})") from None


def _check(path: Path, batch: pa.RecordBatch, targets: list[str], features: list[str]) -> None:
    for name in [*targets, *features]:
        column = batch.column(name)
        if column.null_count:
            raise UserError(f"{path}: column {name!r} has empty values")
        if name not in targets and not (
            pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
        ):
            raise UserError(f"{path}: feature column {name!r} is {column.type}, not numeric")


def load_table(path: str | Path, label_column: str = "label") -> Samples:
    """Every column but the target columns (label_column; several, comma-separated, make
    a vector per row) and an integer `id` column (kept as ids) is a feature."""
    path = Path(path)
    schema, batches = _batches(path)
    targets = [c.strip() for c in label_column.split(",") if c.strip()]
    missing = [c for c in targets if c not in schema.names]
    if missing or not targets:
        raise UserError(
            f"{path}: no label column {(missing or [label_column])[0]!r} (columns: "
            f"{', '.join(schema.names)}); set data.label_column"
        )
    features = [c for c in schema.names if c not in (*targets, "id")]
    if not features:
        raise UserError(f"{path}: no feature columns besides {', '.join(targets)}")
    has_ids = "id" in schema.names and pa.types.is_integer(schema.field("id").type)
    spill = SpillFolder()
    raw = spill.path / "features.f32"
    labels: list[list[np.ndarray]] = [[] for _ in targets]
    ids: list[np.ndarray] = []
    rows = 0
    try:
        with raw.open("wb") as sink:
            for batch in batches:
                _check(path, batch, targets, features)
                block = np.stack(
                    [batch.column(c).to_numpy().astype(np.float32) for c in features], axis=1
                )
                sink.write(block.tobytes())
                for k, name in enumerate(targets):
                    labels[k].append(batch.column(name).to_numpy(zero_copy_only=False))
                if has_ids:
                    ids.append(batch.column("id").to_numpy().astype(np.int64))
                rows += batch.num_rows
    except pa.ArrowException as err:  # e.g. a CSV value that does not fit the inferred type
        raise UserError(f"{path}: cannot read the table ({str(err).splitlines()[0]})") from None
    columns = [np.concatenate(c) if c else np.zeros(0) for c in labels]
    y = columns[0] if len(columns) == 1 else np.stack(columns, axis=1)
    id_values = np.concatenate(ids) if has_ids and ids else None
    if id_values is not None and len(np.unique(id_values)) != len(id_values):
        raise UserError(f"{path}: column 'id' has repeated values")
    return Samples(
        x=MappedArray(raw, "float32", (rows, len(features))),
        y=y,
        class_names=None,  # the task encodes y
        target_names=targets if len(targets) > 1 else None,
        targets_from=f"{path}: column {label_column!r}",
        ids=id_values,
        description=f"table {path.name}: {rows} rows, {len(features)} features "
        f"({', '.join(features[:8])}{', ...' if len(features) > 8 else ''})",
        keep=spill,
    )
