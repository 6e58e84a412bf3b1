"""Batch prediction: a bundle over a prepared data set, written as Parquet keyed by id.

The columns follow the bundle's task: id, then the task's named per-sample values of the
exported outputs (classification: label, label_name, confidence, prob_<class>...;
multilabel: prob_<label>... and label_<label>...; regression: value or value_<name>...;
causal_lm: next_token, and next_text when the bundle carries its tokenizer).

Input shards are spread over N worker processes (one per GPU when predicting on CUDA). Each
output shard is written atomically, then a small record beside it (.parts/<stem>.json) names
the input's sha256, the bundle's identity and the output's sha256. A rerun skips every shard
whose record still matches all three, so an interrupted job resumes where it stopped and a
changed bundle or input is predicted again. out/manifest.json is written last.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from deepfleet._atomic import sha256_file, write_bytes_atomic, write_json_atomic
from deepfleet.data import Manifest, Preprocessing, ShardEntry, read_manifest
from deepfleet.data._crypto import DataKey
from deepfleet.data._reader import dataset_key, decode_raw, open_shard
from deepfleet.deploy._backends import (
    Backend,
    choose_backend,
    cpu_threads_per_process,
    make_backend,
    resolve_device,
)
from deepfleet.deploy._bundle import MODEL_JSON, LoadedBundle, load_bundle
from deepfleet.errors import UserError
from deepfleet.storage import CacheSettings, Store, is_remote, node_local, upload_files

PARTS = ".parts"
# Model outputs held at once while predicting (float32 values): a causal LM's outputs are
# [rows, T, V], so its batches are cut to keep one model call's outputs near 256 MiB.
MAX_OUTPUT_VALUES = 64 << 20


def _preprocessing(bundle: LoadedBundle, manifest: Manifest) -> Preprocessing:
    """The bundle's record; a bundle written before preprocessing was recorded takes the
    data's, as it always did."""
    return bundle.preprocessing if "preprocessing" in bundle.spec else manifest.preprocessing


def _check_compatible(bundle: LoadedBundle, manifest: Manifest) -> None:
    data, model = manifest.preprocessing, _preprocessing(bundle, manifest)
    if data.tokens != model.tokens:
        kinds = {True: "token ids", False: "numeric samples"}
        raise UserError(
            f"data holds {kinds[data.tokens]} but the bundle was trained on {kinds[model.tokens]}"
        )
    if tuple(manifest.sample_shape) != bundle.input_shape:
        raise UserError(
            f"data has samples of shape {list(manifest.sample_shape)} but the "
            f"model expects {list(bundle.input_shape)}"
        )
    if (data.raw_dtype, data.scale) != (model.raw_dtype, model.scale):
        raise UserError(
            f"data holds {data.raw_dtype} samples scaled by {data.scale:g} but the "
            f"bundle was trained on {model.raw_dtype} scaled by {model.scale:g}"
        )


def arrow_column(values: np.ndarray) -> pa.Array:
    """A column as Arrow: strings for object arrays, the NumPy dtype otherwise."""
    values = np.asarray(values)
    if values.dtype == object or values.dtype.kind in "US":
        return pa.array([str(v) for v in values], pa.string())
    return pa.array(values, pa.from_numpy_dtype(values.dtype))


def rows_per_call(bundle: LoadedBundle, batch_size: int) -> int:
    """`batch_size`, cut so that one model call's outputs stay within MAX_OUTPUT_VALUES."""
    shape = bundle.output_shape
    per_row = int(np.prod(shape)) if shape else 1
    return max(1, min(batch_size, MAX_OUTPUT_VALUES // max(1, per_row)))


def output_columns(bundle: LoadedBundle, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """The task's named per-sample values of exported outputs; for a causal LM with a
    tokenizer also next_text, the decoded next token."""
    columns = bundle.task.columns(outputs)
    tokenizer = bundle.tokenizer if "next_token" in columns else None
    if tokenizer is not None:
        tokens = columns["next_token"]
        columns["next_text"] = np.array([tokenizer.decode([int(t)]) for t in tokens], object)
    return columns


def predict_shard(
    bundle: LoadedBundle,
    manifest: Manifest,
    entry: ShardEntry,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    backend: Backend | None = None,
    key: DataKey | None = None,
) -> pa.Table:
    """Predictions for one input shard (the bundle's torch model unless a backend is given).

    Encrypted shards need the key that deepfleet.data.dataset_key checked for the manifest.
    """
    ids, raw, _ = decode_raw(open_shard(manifest, entry, key).read())
    x = _preprocessing(bundle, manifest).apply(raw)
    run = backend or make_backend(bundle, "torch", str(device))
    rows = rows_per_call(bundle, batch_size)
    # Columns batch by batch: a causal LM's full outputs never pile up for a whole shard.
    parts = [
        output_columns(bundle, run(np.ascontiguousarray(x[i : i + rows])))
        for i in range(0, len(x), rows)
    ]
    if not parts:
        empty = np.zeros((0, *(bundle.output_shape or (len(bundle.class_names),))), np.float32)
        parts = [output_columns(bundle, empty)]
    columns = {"id": pa.array(ids, pa.int64())}
    for name in parts[0]:
        columns[name] = arrow_column(np.concatenate([p[name] for p in parts]))
    return pa.table(columns)


@dataclass(frozen=True)
class _Task:
    data: str
    options: dict[str, Any]  # how to reach `data` when it is a URL
    cache: CacheSettings | None  # the node's shard cache for a URL
    split: str
    file: str
    sha256: str
    rows: int
    out: str


def bundle_id(root: Path) -> str:
    return sha256_file(root / MODEL_JSON)


def _record_path(out: Path, input_file: str) -> Path:
    return out / PARTS / f"{Path(input_file).stem}.json"


def _finished(task: _Task, identity: str) -> dict[str, Any] | None:
    """The shard's record when its output is complete and was made from these exact inputs."""
    out = Path(task.out)
    expected = {"input_sha256": task.sha256, "bundle": identity}
    return finished_record(_record_path(out, task.file), out, expected)


def finished_record(path: Path, out: Path, expected: Mapping[str, str]) -> dict[str, Any] | None:
    """The record at `path` when the output it names in `out` is complete (its sha256 holds)
    and it was made from the `expected` inputs (record values)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        target = out / record["file"]
        fresh = (
            all(record[k] == v for k, v in expected.items())
            and target.is_file()
            and sha256_file(target) == record["sha256"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if fresh else None


def write_part(table: pa.Table, target: Path) -> str:
    """One output file, zstd Parquet, written atomically; returns its sha256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(target, sink.getvalue().to_pybytes())
    return sha256_file(target)


# One bundle and backend per worker process, built once by the pool's initializer.
_WORKER: dict[str, Any] = {}


def _setup(bundle: LoadedBundle, backend: Backend, batch_size: int, key: DataKey | None) -> None:
    _WORKER.update(
        bundle=bundle,
        backend=backend,
        batch_size=batch_size,
        bundle_id=bundle_id(bundle.root),
        key=key,
    )


def _init_worker(
    bundle_root: str, backend: str, devices, threads: int, batch_size: int, key: DataKey | None
) -> None:
    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_root)
    # Workers share the machine's cores: onnxruntime's threads must not spin.
    _setup(bundle, make_backend(bundle, backend, devices.get(), threads=threads), batch_size, key)


def _run_task(task: _Task) -> dict[str, Any]:
    bundle: LoadedBundle = _WORKER["bundle"]
    manifest = read_manifest(task.data, task.options, task.cache)
    entry = next(e for e in manifest.shards(task.split) if e.file == task.file)
    table = predict_shard(
        bundle,
        manifest,
        entry,
        batch_size=_WORKER["batch_size"],
        backend=_WORKER["backend"],
        key=_WORKER["key"],
    )
    out = Path(task.out)
    target = out / f"pred-{Path(entry.file).stem}.parquet"
    digest = write_part(table, target)
    record = {
        "file": target.name,
        "input": entry.file,
        "split": task.split,
        "rows": table.num_rows,
        "sha256": digest,
        "input_sha256": entry.sha256,
        "bundle": _WORKER["bundle_id"],
    }
    # The record is written after the output: a crash in between only repeats this shard.
    write_json_atomic(_record_path(out, entry.file), record)
    return record


def _devices(device: str, nproc: int):
    """A queue handing each worker its device: cuda:0..k-1 round robin on CUDA, else CPU."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    count = torch.cuda.device_count() if on_cuda else 0
    for rank in range(nproc):
        queue.put(f"cuda:{rank % count}" if count else "cpu")
    return queue


def predict_dataset(
    bundle: LoadedBundle,
    data: str | Path,
    out: str | Path,
    *,
    splits: list[str] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    backend: str = "auto",
    nproc: int = 1,
    key: str | Path | DataKey | None = None,
    threads: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache: CacheSettings | None = None,
) -> dict:
    """Predict every shard of the chosen splits; one output Parquet file per input shard.

    `backend` auto picks onnxruntime when the bundle has an ONNX graph (the rule serve uses,
    deepfleet.deploy.choose_backend), else torch. `threads` are the CPU threads of each
    process (default: the cores divided among the processes).

    Shards already finished by an earlier run (output and inputs unchanged) are skipped.
    Encrypted shards need `key` (a key file, env:NAME, or $DEEPFLEET_DATA_KEY).
    Returns the manifest written to out/manifest.json (`skipped` counts the reused shards).

    `data` and `out` may be URLs (s3://...; `storage_options` say how to reach them, `cache`
    is the node's shard cache for data at a URL, the default one when None): the files are
    written in this node's cache first (where a rerun finds what is done), then uploaded,
    each atomically, manifest.json last.
    """
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    options = dict(storage_options or {})
    manifest = read_manifest(data, options, cache)
    _check_compatible(bundle, manifest)
    data_key = dataset_key(manifest, key)  # checked here so a wrong key fails before any work
    out, remote = output_folder(out)
    identity = bundle_id(bundle.root)
    tasks = [
        _Task(str(manifest.root), options, cache, split, e.file, e.sha256, e.rows, str(out))
        for split in splits or manifest.splits
        for e in manifest.shards(split)
    ]
    done = {t.file: r for t in tasks if (r := _finished(t, identity)) is not None}
    todo = [t for t in tasks if t.file not in done]
    workers = min(nproc, len(todo))
    chosen = choose_backend(bundle, backend, resolve_device(str(device)))
    threads = threads or cpu_threads_per_process(max(1, workers))
    if todo and workers <= 1:
        torch.set_num_threads(threads)
        # One process alone on its cores: onnxruntime's threads may spin between batches.
        _setup(
            bundle,
            make_backend(bundle, chosen, str(device), threads=threads, spin=True),
            batch_size,
            data_key,
        )
        done.update((t.file, _run_task(t)) for t in todo)
    elif todo:
        ctx = multiprocessing.get_context("spawn")
        init = (
            str(bundle.root),
            chosen,
            _devices(str(device), workers),
            threads,
            batch_size,
            data_key,
        )
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=init
        ) as pool:
            done.update((t.file, r) for t, r in zip(todo, pool.map(_run_task, todo), strict=True))
    entries = [
        {k: done[t.file][k] for k in ("file", "input", "split", "rows", "sha256")} for t in tasks
    ]
    result = {
        "bundle": str(bundle.root),
        "bundle_sha256": identity,
        "data": str(manifest.root),
        "data_manifest_sha256": manifest.digest(),
        "backend": chosen,
        "nproc": max(1, workers),
        "files": entries,
        "rows": sum(e["rows"] for e in entries),
        "skipped": len(tasks) - len(todo),
    }
    publish(out, remote, options, result)
    return result


def output_folder(out: str | Path) -> tuple[Path, str | None]:
    """Where the outputs are written: `out`, or for a URL this node's folder for it (where a
    rerun finds what is done), with the URL."""
    remote = str(out) if is_remote(out) else None
    folder = node_local("predictions", remote) if remote else Path(out)
    (folder / PARTS).mkdir(parents=True, exist_ok=True)
    return folder, remote


def publish(out: Path, remote: str | None, options: Mapping[str, Any], result: dict) -> None:
    """out/manifest.json, written last; for a URL, then every output uploaded, manifest last."""
    write_json_atomic(out / "manifest.json", result)
    if remote:
        store = Store(remote, options)
        # The .parts records serve a rerun on this node; the URL gets the results.
        names = sorted(p.name for p in out.iterdir() if p.is_file())
        names.sort(key=lambda n: n == "manifest.json")
        upload_files(out, store, names)
