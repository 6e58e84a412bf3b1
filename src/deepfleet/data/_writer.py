"""Writing Samples as Parquet shards plus a manifest: split by id, shards streamed by a
process pool from row sources, resumable, and renamed into place complete."""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from deepfleet import __version__
from deepfleet._atomic import fsync_dir, write_bytes_atomic, write_json_atomic
from deepfleet.data._crypto import DataKey
from deepfleet.data._manifest import FORMAT, MANIFEST_NAME, Manifest, read_manifest
from deepfleet.data._record import class_targets, encoding, manifest_record, targets_record
from deepfleet.data._resume import (
    PLAN,
    kept_shard,
    open_staging,
    plan_fingerprint,
    staging_folder,
)
from deepfleet.data._samples import MappedRows, Samples
from deepfleet.data._shard import (
    ROW_GROUP_BYTES,
    label_column,
    row_group_rows,
    set_progress_counter,
    shard_table,
    write_shard,
)
from deepfleet.data._split import stratified_split
from deepfleet.errors import UserError, storage_errors
from deepfleet.storage import CacheSettings, is_remote

__all__ = ["ROW_GROUP_BYTES", "label_column", "row_group_rows", "shard_table", "write_dataset"]

# Below this many bytes of features, starting a pool costs more than it saves.
POOL_MIN_BYTES = 16 << 20
Progress = Callable[[int, int, int], None]  # rows and feature bytes written so far, total rows


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


def _job_args(samples: Samples, folder: Path, split: str, index: int, rows: np.ndarray, group, key):
    """What one shard's worker is sent: its ids, and its rows as a row source to read (a
    file list, a mapped file and row numbers), or as arrays for samples held in memory."""
    x, y = samples.x, samples.y
    if isinstance(x, np.ndarray):
        return (folder, split, index, samples.ids[rows], x[rows], y[rows], group, key, None)
    if hasattr(x, "select"):  # a file list: the worker gets only its own files
        part = (x.select(rows), np.asarray(y[rows]), group, key, np.arange(len(rows)))
        return (folder, split, index, samples.ids[rows], *part)
    # Its own targets only (a whole array would be pickled into every shard's job).
    targets = y if isinstance(y, MappedRows) else np.asarray(y[rows])
    return (folder, split, index, samples.ids[rows], x, targets, group, key, rows)


def _smallest_int(values: np.ndarray) -> np.ndarray:
    """Integers in the smallest dtype that holds them (the same values): MNIST's labels in
    uint8, a million row ids in uint32. Shards store them as int64 all the same."""
    if values.ndim != 1 or not len(values) or not np.issubdtype(values.dtype, np.integer):
        return values
    small = np.result_type(np.min_scalar_type(values.min()), np.min_scalar_type(values.max()))
    return values.astype(small) if small.itemsize < values.itemsize else values


def _compact(samples: Samples) -> None:
    """Class targets and ids made compact in place, before the pool forks: a forked worker's
    resident memory counts every page of the parent's it maps, once per worker."""
    if class_targets(samples) and isinstance(samples.y, np.ndarray):
        samples.y = _smallest_int(samples.y)
    samples.ids = _smallest_int(np.asarray(samples.ids))


def _libc() -> Any:
    """The C library, where it has glibc's malloc_trim; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _release_freed() -> None:
    """Hand memory freed by now back to the system: glibc keeps freed blocks of a few MB
    for reuse, so the prepare process would hold its load's and split's peak while it
    writes, and each forked worker would map (and count) those pages too."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _pool(workers: int, counter) -> ProcessPoolExecutor:
    """A pool whose workers start now (fork starts every worker at the first submit).

    fork, where there is one: it needs no `if __name__ == "__main__"` guard in the caller's
    script and starts at once. Workers are started before the split is drawn, so they share
    only the source's row readers, labels and ids with the parent, never the split's
    arrays; each is then sent its own rows.
    """
    method = "fork" if sys.platform.startswith("linux") else "spawn"
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context(method),
        initializer=set_progress_counter,
        initargs=(counter,),
    )
    pool.submit(int).result()
    return pool


def _run(
    jobs: Iterator[tuple[int, tuple]],
    entries: list[dict | None],
    pool: ProcessPoolExecutor | None,
    workers: int,
    counter,
    report: Callable[[], None],
) -> None:
    """Every shard of `jobs` (slot, arguments) written, by the pool or in this process,
    its manifest entry put in its slot; `report` after each step. Jobs are built as they
    are sent, at most one more than the workers in flight: never all shards' rows at once."""
    if pool is None:
        set_progress_counter(counter)
        try:
            for k, args in jobs:
                entries[k] = write_shard(*args)
                report()
        finally:
            set_progress_counter(None)
        return
    pending: dict[Future, int] = {}

    def collect() -> None:
        done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
        for future in done:
            entries[pending.pop(future)] = future.result()
        report()

    for k, args in jobs:
        while len(pending) > workers:
            collect()
        pending[pool.submit(write_shard, *args)] = k
    while pending:
        collect()


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
    progress: Progress | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache: CacheSettings | None = None,
) -> Manifest:
    """Split, shard and write `samples` into a new folder `out`; returns its manifest.

    Each sample's split comes from a seeded hash of its id (stratified by class when the
    targets are classes and `stratify`). Shards are written by up to `workers` processes
    (default: one per core, or this process alone below 16 MiB of features), each reading
    its own rows from the source a row group at a time; the same samples and seed give the
    same bytes whatever the number of workers. Everything is written into a staging folder
    beside `out`; a prepare that was killed and runs again keeps the shards it finished. The
    manifest is written last and the folder renamed to `out`: complete, or absent.

    `out` may be a URL (s3://bucket/prefix, with `storage_options`): the same files are
    staged on this node (beside the shard `cache`) and uploaded, the manifest last (see
    deepfleet.data._upload).
    """
    store = None
    if is_remote(out):
        from deepfleet.data._upload import local_twin, remote_output

        store = remote_output(os.fspath(out), dict(storage_options or {}))
        out = local_twin(store, cache or CacheSettings.of(None, None))
        out.parent.mkdir(parents=True, exist_ok=True)
    out = Path(out)  # a local folder: storage options (a job's, for its URLs) do not apply
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: output folder exists and is not empty")
    if workers is None:
        workers = (os.cpu_count() or 1) if samples.x.nbytes >= POOL_MIN_BYTES else 1
    workers = max(1, min(workers, shards + 2))  # at most one per shard: train, val, test
    _compact(samples)
    _release_freed()  # before the fork: each worker would map (and count) what is kept
    counter = multiprocessing.get_context().Array("q", [0, 0])
    pool = _pool(workers, counter) if workers > 1 else None
    settings = {
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "source": source,
        "task": task,
    }
    try:
        # A refusal that names no file (Arrow's writer does not) names the output folder.
        with storage_errors(out):
            jobs, parts, entries = _write_shards(
                samples,
                out,
                shards,
                settings,
                key,
                rows_per_group,
                stratify,
                pool,
                workers,
                counter,
                progress,
            )
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    stage = staging_folder(out)
    files = {}
    for name, data in samples.extra_files.items():
        write_bytes_atomic(stage / name, data)
        files[name] = hashlib.sha256(data).hexdigest()
    extra = {"task": task, "targets": targets_record(samples, parts), "files": files}
    manifest = manifest_record(samples, parts, jobs, entries, settings, key, extra)
    if store is not None:
        from deepfleet.data._upload import upload_dataset

        # The plan stays until the upload is done: a re-run resumes from this stage.
        write_json_atomic(stage / MANIFEST_NAME, manifest)
        names = [e["file"] for e in entries if e is not None] + sorted(files)
        upload_dataset(stage, store, names)
        shutil.rmtree(out.parent)
        return read_manifest(store.url(), storage_options, cache)
    (stage / PLAN).unlink()
    write_json_atomic(stage / MANIFEST_NAME, manifest)  # last: it vouches for the shards
    if out.exists():
        out.rmdir()  # empty (checked above)
    os.replace(stage, out)
    fsync_dir(out.parent)
    return read_manifest(out)


def _write_shards(
    samples, out, shards, settings, key, rows_per_group, stratify, pool, workers, counter, progress
):
    """The split, the shard plan, and every shard written (or kept from a killed run):
    (jobs, parts, manifest entries)."""
    classes = stratify and class_targets(samples)
    parts = stratified_split(
        samples.y if classes else None,
        settings["val_fraction"],
        settings["test_fraction"],
        settings["seed"],
        test_rows=samples.test_rows,
        rows=len(samples.y),
        ids=samples.ids,
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
    plan = {
        **settings,
        "format": FORMAT,
        "version": __version__,
        "description": samples.description,
        "shape": list(samples.sample_shape),
        "dtype": str(samples.x.dtype),
        "features": encoding(samples),
        "group": group,
        "counts": counts,
        "key": key.key_id if key else None,
    }
    stage = open_staging(out, plan_fingerprint(plan, parts, samples.ids))
    entries: list[dict | None] = [
        kept_shard(stage, split, i, samples.ids[rows], key) for split, i, rows in jobs
    ]
    _release_freed()
    counter[0] = sum(len(jobs[k][2]) for k, e in enumerate(entries) if e is not None)
    total = len(samples.y)
    report = (lambda: progress(counter[0], counter[1], total)) if progress else (lambda: None)
    todo = (
        (k, _job_args(samples, stage, *jobs[k], group, key))
        for k, e in enumerate(entries)
        if e is None
    )
    _run(todo, entries, pool, workers, counter, report)
    return jobs, parts, entries
