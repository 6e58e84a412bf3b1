"""One shard file: rows read from their source a row group at a time and streamed into a
Parquet writer, so a worker holds one row group, never a whole shard.

The bytes are a pure function of the rows (zstd, a fixed writer, no timestamps): the same
rows give the same file whichever process writes it. The file is written under a temporary
name and renamed to `<split>-<index>-<first 12 hex of its sha256>.parquet` once complete.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfleet._atomic import fsync_dir, sha256_file
from deepfleet.data._crypto import DataKey, encryption_properties
from deepfleet.data._samples import MappedRows
from deepfleet.data._tensor import tensor_field_array

# A row group is the unit a streaming reader decodes at once: a few MiB of features keeps
# memory per reader small while amortising Parquet's per-group overhead.
ROW_GROUP_BYTES = 4 << 20
ROW_GROUP_ROWS_MIN, ROW_GROUP_ROWS_MAX = 256, 65536

# Set in each pool worker (and in the parent when it writes alone): rows and feature bytes
# written so far, which the parent's progress bar reads.
_progress: Any = None


def set_progress_counter(counter: Any) -> None:
    global _progress
    _progress = counter


def row_group_rows(sample_bytes: int) -> int:
    """Rows per row group for samples of `sample_bytes` bytes each."""
    rows = ROW_GROUP_BYTES // max(sample_bytes, 1)
    return int(min(max(rows, ROW_GROUP_ROWS_MIN), ROW_GROUP_ROWS_MAX))


def int64_array(values: np.ndarray) -> pa.Array:
    """An int64 column without nulls straight from its buffer: pa.array() on a NumPy array
    imports pandas to ask whether it is categorical, most of a second in every worker."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def label_column(y: np.ndarray) -> tuple[pa.Field, pa.Array]:
    """Class indices as int64; any other targets (vectors, token sequences, floats) as a
    tensor column like x, with their dtype and shape in the field."""
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return pa.field("label", pa.int64(), nullable=False), int64_array(y)
    return tensor_field_array(y if y.ndim > 1 else y[:, None], "label")


def shard_table(ids: np.ndarray, x: Any, y: np.ndarray, rows: np.ndarray | None = None) -> pa.Table:
    """id, label, and x: one fixed-shape tensor per row, dtype and shape in the schema (or,
    for a source with its own columns such as encoded images, those columns)."""
    if hasattr(x, "arrow_columns"):
        features = x.arrow_columns(np.arange(len(ids)) if rows is None else rows)
    else:
        features = [tensor_field_array(x if rows is None else x[rows])]
    target_field, targets = label_column(np.asarray(y))
    fields = [pa.field("id", pa.int64(), nullable=False), target_field] + [f for f, _ in features]
    arrays = [int64_array(ids), targets] + [a for _, a in features]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _count(table: pa.Table) -> None:
    # Read once: prepares run in threads of one process (several nodes' folders in tests)
    # may set or clear the counter between a check and its use.
    counter = _progress
    if counter is not None:
        with counter.get_lock():
            counter[0] += table.num_rows
            counter[1] += table.column("x").nbytes


def write_shard(
    folder: Path,
    split: str,
    index: int,
    ids: np.ndarray,
    x: Any,
    y: Any,
    rows_per_group: int,
    key: DataKey | None,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """Write one shard of `ids` and return its manifest entry. x is the shard's own rows
    (rows=None) or a row source read at `rows`, one row group at a time; y is the shard's own
    targets, or (token targets) a MappedRows read at `rows` like x."""
    fd, name = tempfile.mkstemp(prefix=f".{split}-{index:05d}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(name)
    writer = None
    try:
        for lo in range(0, max(len(ids), 1), rows_per_group):
            hi = min(lo + rows_per_group, len(ids))
            pick = np.arange(lo, hi) if rows is None else rows[lo:hi]
            # Targets kept in a file (token windows) are read at the rows, as x is.
            targets = y[pick] if isinstance(y, MappedRows) else y[lo:hi]
            table = shard_table(ids[lo:hi], x, targets, pick)
            if writer is None:
                # encryption adds random nonces and data keys: encrypted shards differ on
                # every write (their plaintext does not).
                writer = pq.ParquetWriter(
                    tmp,
                    table.schema,
                    compression="zstd",
                    encryption_properties=encryption_properties(key) if key else None,
                )
            writer.write_table(table, row_group_size=rows_per_group)
            _count(table)
        writer.close()
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        final = folder / f"{split}-{index:05d}-{digest[:12]}.parquet"
        os.replace(tmp, final)
        fsync_dir(folder)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"file": final.name, "rows": int(len(ids)), "sha256": digest}
