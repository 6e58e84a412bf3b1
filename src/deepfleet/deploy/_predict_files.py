"""Batch prediction over a folder of image files (JPEG, PNG, WebP) with a bundle trained on
encoded images: each file decoded by the bundle's recorded evaluation transform, the
predictions written as Parquet keyed by the file's path relative to the folder.

The files are taken in sorted path order, FILES_PER_PART to an output part. Each part is
written atomically, then its record (.parts/<part>.json) with the sha256 of its files'
paths and bytes, the bundle's identity and the output's sha256; a rerun predicts only the
parts whose files, bundle or output changed. out/manifest.json is written last.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from deepfleet._atomic import sha256_file, write_json_atomic
from deepfleet.data._decode import decode_named
from deepfleet.data._images import SUFFIXES
from deepfleet.deploy._backends import (
    choose_backend,
    cpu_threads_per_process,
    make_backend,
    resolve_device,
)
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy._predict import (
    PARTS,
    arrow_column,
    bundle_id,
    finished_record,
    output_columns,
    output_folder,
    publish,
    rows_per_call,
    write_part,
)
from deepfleet.errors import UserError

FILES_PER_PART = 1024


def image_files(folder: Path) -> list[str]:
    """The folder's image files at any depth (hidden names skipped), as sorted POSIX paths
    relative to it."""
    found = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() in SUFFIXES and path.is_file():
            found.append(relative.as_posix())
    return sorted(found)


def _inputs_digest(names: list[str], digests: list[str]) -> str:
    """sha256 over the part's files: each one's path and the sha256 of its bytes."""
    listed = [[name, digest] for name, digest in zip(names, digests, strict=True)]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()


def _predict_part(
    bundle: LoadedBundle, folder: Path, names: list[str], run, rows: int, threads: int
) -> tuple[pa.Table, str]:
    """The part's files decoded (in `threads` threads) and predicted `rows` at a time, and
    their digest, from the same reads."""
    prep = bundle.preprocessing
    parts, digests = [], []
    for i in range(0, len(names), rows):
        batch = names[i : i + rows]
        blobs = [(folder / name).read_bytes() for name in batch]
        digests += [hashlib.sha256(blob).hexdigest() for blob in blobs]
        where = [f"{folder / n}" for n in batch]
        pixels = decode_named(blobs, prep.image or {}, where, threads=threads)
        parts.append(output_columns(bundle, run(np.ascontiguousarray(prep.apply(pixels)))))
    columns = {"path": pa.array(names, pa.string())}
    for name in parts[0]:
        columns[name] = arrow_column(np.concatenate([p[name] for p in parts]))
    return pa.table(columns), _inputs_digest(names, digests)


def predict_files(
    bundle: LoadedBundle,
    folder: str | Path,
    out: str | Path,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    backend: str = "auto",
    threads: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> dict:
    """Predict every image file under `folder`; one output Parquet file per part of
    FILES_PER_PART files, with the columns of predict_dataset and `path` in place of `id`.

    Parts already finished by an earlier run (files, bundle and output unchanged) are
    skipped. `out` may be a URL (written on this node first, then uploaded, manifest last).
    """
    folder = Path(folder)
    if bundle.preprocessing.image is None:
        raise UserError(
            f"{folder}: a folder of image files needs a bundle trained on encoded images; "
            "this one takes prepared samples (deepfleet prepare the folder, then predict that)"
        )
    names = image_files(folder)
    if not names:
        raise UserError(f"{folder}: no image files ({', '.join(SUFFIXES)}) in it")
    out, remote = output_folder(out)
    identity = bundle_id(bundle.root)
    chosen = choose_backend(bundle, backend, resolve_device(str(device)))
    run = None
    rows = rows_per_call(bundle, batch_size)
    entries, skipped = [], 0
    for start in range(0, len(names), FILES_PER_PART):
        part = f"pred-{start // FILES_PER_PART:05d}"
        chunk = names[start : start + FILES_PER_PART]
        record_path = out / PARTS / f"{part}.json"
        # Only a part with a record is hashed before predicting; a new one is hashed from
        # the bytes read to predict it.
        record = None
        if record_path.is_file():
            inputs = _inputs_digest(chunk, [sha256_file(folder / n) for n in chunk])
            expected = {"inputs_sha256": inputs, "bundle": identity}
            record = finished_record(record_path, out, expected)
        if record is None:
            if run is None:  # built when there is work: a finished rerun loads no model
                threads = threads or cpu_threads_per_process(1)
                torch.set_num_threads(threads)
                run = make_backend(bundle, chosen, str(device), threads=threads, spin=True)
            table, inputs = _predict_part(bundle, folder, chunk, run, rows, threads)
            target = out / f"{part}.parquet"
            record = {
                "file": target.name,
                "first": chunk[0],
                "rows": table.num_rows,
                "sha256": write_part(table, target),
                "inputs_sha256": inputs,
                "bundle": identity,
            }
            # The record is written after the output: a crash in between only repeats it.
            write_json_atomic(record_path, record)
        else:
            skipped += 1
        entries.append({k: record[k] for k in ("file", "first", "rows", "sha256")})
    result = {
        "bundle": str(bundle.root),
        "bundle_sha256": identity,
        "data": str(folder),
        "backend": chosen,
        "nproc": 1,
        "files": entries,
        "rows": sum(e["rows"] for e in entries),
        "skipped": skipped,
    }
    publish(out, remote, dict(storage_options or {}), result)
    return result
