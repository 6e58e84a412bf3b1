"""Writing Samples as Parquet shards plus a manifest, atomically."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfleet import __version__
from deepfleet._atomic import atomic_dir, write_bytes_atomic, write_json_atomic
from deepfleet.data._manifest import FORMAT, MANIFEST_NAME, Manifest, read_manifest
from deepfleet.data._samples import Samples
from deepfleet.data._split import stratified_split
from deepfleet.errors import UserError

ROW_GROUP_ROWS = 4096


def shard_table(ids: np.ndarray, x: np.ndarray, y: np.ndarray) -> pa.Table:
    """id, label, and x as a fixed-shape tensor column (dtype and shape kept in the schema)."""
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "label": pa.array(y, pa.int64()),
        "x": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(x)),
    })


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    return sink.getvalue()


def _shard_counts(rows: dict[str, int], train_shards: int) -> dict[str, int]:
    """Training gets the shards asked for; val and test get a proportional count (>= 1)."""
    counts = {}
    for split, n in rows.items():
        if split == "train":
            counts[split] = min(train_shards, max(n, 1))
        else:
            share = n / max(rows.get("train", n), 1)
            counts[split] = max(1, min(n, round(train_shards * share)))
    return counts


def write_dataset(
    samples: Samples,
    out: str | Path,
    *,
    shards: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: dict[str, Any] | None = None,
) -> Manifest:
    """Split, shard and write `samples` into a new folder `out`; returns its manifest.

    The folder appears complete or not at all: it is written under a temporary name.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: output folder exists and is not empty")
    if out.exists():
        out.rmdir()
    parts = stratified_split(samples.y, val_fraction, test_fraction, seed)
    counts = _shard_counts({k: len(v) for k, v in parts.items()}, shards)
    num_classes = len(samples.class_names)
    splits: dict[str, Any] = {}
    with atomic_dir(out) as tmp:
        for split in ("train", "val", "test"):
            if split not in parts:
                continue
            rows = parts[split]
            entries = []
            for i, chunk in enumerate(np.array_split(rows, counts[split])):
                data = _parquet_bytes(shard_table(samples.ids[chunk], samples.x[chunk],
                                                  samples.y[chunk]))
                digest = hashlib.sha256(data).hexdigest()
                name = f"{split}-{i:05d}-{digest[:12]}.parquet"
                write_bytes_atomic(tmp / name, data)
                entries.append({"file": name, "rows": int(len(chunk)), "sha256": digest})
            splits[split] = {
                "rows": int(len(rows)),
                "class_histogram": np.bincount(samples.y[rows], minlength=num_classes).tolist(),
                "shards": entries,
            }
        write_json_atomic(tmp / MANIFEST_NAME, {
            "format": FORMAT,
            "deepfleet_version": __version__,
            "source": source or {"description": samples.description},
            "features": {
                "dtype": str(samples.x.dtype),
                "shape": list(samples.sample_shape),
                "scale": samples.scale,
            },
            "schema": {"id": "int64", "label": "int64",
                       "x": f"fixed_shape_tensor<{samples.x.dtype}>{list(samples.sample_shape)}"},
            "class_names": samples.class_names,
            "seed": seed,
            "split_fractions": {"val": val_fraction, "test": test_fraction},
            "splits": splits,
        })
    return read_manifest(out)
