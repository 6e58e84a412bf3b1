"""Writing Samples as Parquet shards plus a manifest, atomically, shards in a process pool."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfleet import __version__
from deepfleet._atomic import atomic_dir, write_bytes_atomic, write_json_atomic
from deepfleet.data._crypto import ALGORITHM, DataKey, encryption_properties
from deepfleet.data._manifest import FORMAT, MANIFEST_NAME, Manifest, read_manifest, sealed
from deepfleet.data._samples import MappedRows, Samples
from deepfleet.data._split import stratified_split
from deepfleet.data._tensor import describe, tensor_field_array
from deepfleet.errors import UserError

# Below this many bytes of features, starting a pool costs more than it saves.
POOL_MIN_BYTES = 16 << 20
# A row group is the unit a streaming reader decodes at once: a few MiB of features keeps
# memory per reader small while amortising Parquet's per-group overhead.
ROW_GROUP_BYTES = 4 << 20
ROW_GROUP_ROWS_MIN, ROW_GROUP_ROWS_MAX = 256, 65536


def label_column(y: np.ndarray) -> tuple[pa.Field, pa.Array]:
    """Class indices as int64; any other targets (vectors, token sequences, floats) as a
    tensor column like x, with their dtype and shape in the field."""
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        return pa.field("label", pa.int64(), nullable=False), pa.array(y, pa.int64())
    return tensor_field_array(y if y.ndim > 1 else y[:, None], "label")


def shard_table(ids: np.ndarray, x: np.ndarray, y: np.ndarray) -> pa.Table:
    """id, label, and x: one fixed-shape tensor per row, dtype and shape in the schema."""
    field, values = tensor_field_array(x)
    target_field, targets = label_column(np.asarray(y))
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), target_field, field])
    return pa.Table.from_arrays([pa.array(ids, pa.int64()), targets, values], schema=schema)


def row_group_rows(sample_bytes: int) -> int:
    """Rows per row group for samples of `sample_bytes` bytes each."""
    rows = ROW_GROUP_BYTES // max(sample_bytes, 1)
    return int(min(max(rows, ROW_GROUP_ROWS_MIN), ROW_GROUP_ROWS_MAX))


def _parquet_bytes(table: pa.Table, rows_per_group: int, key: DataKey | None) -> bytes:
    sink = pa.BufferOutputStream()
    # zstd and a fixed writer make the bytes a pure function of the table (no timestamps);
    # encryption adds random nonces and data keys, so encrypted shards differ on every write.
    pq.write_table(
        table,
        sink,
        row_group_size=rows_per_group,
        compression="zstd",
        encryption_properties=encryption_properties(key) if key else None,
    )
    return sink.getvalue().to_pybytes()


def _write_shard(
    folder: Path,
    split: str,
    index: int,
    ids: np.ndarray,
    x: np.ndarray | MappedRows,
    y: np.ndarray | MappedRows,
    rows_per_group: int,
    key: DataKey | None,
    rows: np.ndarray | None = None,
) -> dict[str, Any]:
    """One shard file under its content-addressed name; runs in a pool worker. Memory-mapped
    samples arrive as their file and `rows`, read here, so no worker is sent the data."""
    if rows is not None:
        x, y = x[rows], y[rows]
    data = _parquet_bytes(shard_table(ids, x, y), rows_per_group, key)
    digest = hashlib.sha256(data).hexdigest()
    name = f"{split}-{index:05d}-{digest[:12]}.parquet"
    write_bytes_atomic(folder / name, data)
    return {"file": name, "rows": int(len(y)), "sha256": digest}


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


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork shares the parent's arrays without pickling them again; elsewhere spawn is safe.
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))


def write_dataset(
    samples: Samples,
    out: str | Path,
    *,
    shards: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    source: dict[str, Any] | None = None,
    workers: int | None = None,
    key: DataKey | None = None,
    rows_per_group: int | None = None,
    task: str = "classification",
    stratify: bool = True,
) -> Manifest:
    """Split, shard and write `samples` into a new folder `out`; returns its manifest.

    The folder appears complete or not at all: it is written under a temporary name and
    renamed once every shard and the manifest are on disk. Shards are written by up to
    `workers` processes (default: one per core, or this process alone below 16 MiB of
    features); the same samples and seed give the same bytes whatever the number of
    workers. With `key` every shard is encrypted. `task` is recorded; `stratify` draws
    the splits stratified by the (class index) targets.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: output folder exists and is not empty")
    if out.exists():
        out.rmdir()
    classes = stratify and _class_targets(samples)
    parts = stratified_split(
        samples.y if classes else None,
        val_fraction,
        test_fraction,
        seed,
        test_rows=samples.test_rows,
        rows=len(samples.y),
    )
    counts = _shard_counts({k: len(v) for k, v in parts.items()}, shards)
    group = rows_per_group or row_group_rows(
        int(np.prod(samples.sample_shape)) * samples.x.dtype.itemsize
    )
    jobs = [
        (split, i, chunk)
        for split in ("train", "val", "test")
        if split in parts
        for i, chunk in enumerate(np.array_split(parts[split], counts[split]))
    ]
    if workers is None:
        workers = (os.cpu_count() or 1) if samples.x.nbytes >= POOL_MIN_BYTES else 1
    workers = min(workers, len(jobs))
    with atomic_dir(out) as tmp:
        mapped = isinstance(samples.x, MappedRows)
        args = [
            (tmp, split, i, samples.ids[c], samples.x, samples.y, group, key, c)
            if mapped
            else (tmp, split, i, samples.ids[c], samples.x[c], samples.y[c], group, key, None)
            for split, i, c in jobs
        ]
        if workers > 1:
            with _pool(workers) as pool:
                entries = list(pool.map(_write_shard, *zip(*args, strict=True)))
        else:
            entries = [_write_shard(*a) for a in args]
        files = {}
        for name, data in samples.extra_files.items():
            write_bytes_atomic(tmp / name, data)
            files[name] = hashlib.sha256(data).hexdigest()
        targets = _targets(samples, parts)
        write_json_atomic(
            tmp / MANIFEST_NAME,
            _manifest(
                samples,
                parts,
                jobs,
                entries,
                seed,
                val_fraction,
                test_fraction,
                source,
                key,
                {"task": task, "targets": targets, "files": files},
            ),
        )
    return read_manifest(out)


def _manifest(
    samples: Samples,
    parts: dict[str, np.ndarray],
    jobs: list,
    entries: list,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    source: dict[str, Any] | None,
    key: DataKey | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    num_classes = len(samples.class_names or [])
    classes = _class_targets(samples)
    splits: dict[str, Any] = {}
    for (split, _, _), entry in zip(jobs, entries, strict=True):
        rows = parts[split]
        part: dict[str, Any] = {"rows": int(len(rows))}
        if classes:
            part["class_histogram"] = np.bincount(samples.y[rows], minlength=num_classes).tolist()
        splits.setdefault(split, {**part, "shards": []})["shards"].append(entry)
    shape = list(samples.sample_shape)
    manifest = {
        "format": FORMAT,
        "deepfleet_version": __version__,
        "source": source or {"description": samples.description},
        "features": {
            "dtype": str(samples.x.dtype),
            "shape": shape,
            "scale": samples.scale,
            **({"encoding": "token_ids"} if samples.tokens else {}),
        },
        "schema": {
            "id": "int64",
            "label": "int64"
            if classes
            else describe(samples.y.dtype, list(extra["targets"]["shape"]) or [1]),
            "x": describe(samples.x.dtype, shape),
        },
        "class_names": samples.class_names or [],
        **extra,
        "seed": seed,
        "split_fractions": {"val": val_fraction, "test": test_fraction},
        "test_split": "source" if samples.test_rows is not None else "drawn",
        "splits": splits,
    }
    if key is not None:
        manifest["encryption"] = {
            "algorithm": ALGORITHM,
            "key_id": key.key_id,
            "scheme": "parquet-modular-encryption",
        }
    return sealed(manifest, key.authenticate if key is not None else None)


def _class_targets(samples: Samples) -> bool:
    """Whether the targets are one class index per sample."""
    return samples.y.ndim == 1 and np.issubdtype(samples.y.dtype, np.integer)


def _targets(samples: Samples, parts: dict[str, np.ndarray]) -> dict[str, Any]:
    """The manifest's record of the targets; float targets get the training split's mean
    and std (a regression standardises with them)."""
    y = samples.y
    shape = list(y.shape[1:]) if y.ndim > 1 or not _class_targets(samples) else []
    if y.ndim == 1 and not _class_targets(samples):
        shape = [1]
    stats = dict(samples.target_stats)
    if np.issubdtype(y.dtype, np.floating) and not isinstance(y, MappedRows):
        from deepfleet.tasks import target_stats

        stats.update(target_stats(y[parts["train"]]))
    return {
        "dtype": "int64" if _class_targets(samples) else str(y.dtype),
        "shape": shape,
        "names": list(samples.class_names or []),
        "stats": stats,
    }
