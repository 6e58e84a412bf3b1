"""Batch prediction: a bundle over a prepared data set, written as Parquet keyed by id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from deepfleet._atomic import sha256_file, write_bytes_atomic, write_json_atomic
from deepfleet.data import DataKey, Manifest, dataset_key, open_shard, read_manifest, verify_shard
from deepfleet.data._reader import decode_batch
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.errors import UserError
from deepfleet.evaluate import predict_proba


def predictions_table(ids: np.ndarray, probs: np.ndarray, class_names: list[str]) -> pa.Table:
    """id, label, label_name, confidence, then one probability column per class."""
    labels = probs.argmax(axis=1)
    columns = {
        "id": pa.array(ids, pa.int64()),
        "label": pa.array(labels, pa.int64()),
        "label_name": pa.array([class_names[i] for i in labels], pa.string()),
        "confidence": pa.array(probs.max(axis=1), pa.float32()),
    }
    for i, name in enumerate(class_names):
        columns[f"prob_{name}"] = pa.array(probs[:, i], pa.float32())
    return pa.table(columns)


def _check_compatible(bundle: LoadedBundle, manifest: Manifest) -> None:
    if tuple(manifest.sample_shape) != bundle.input_shape:
        raise UserError(f"data has samples of shape {list(manifest.sample_shape)} but the "
                        f"model expects {list(bundle.input_shape)}")


def predict_shard(bundle: LoadedBundle, manifest: Manifest, shard_file: str,
                  device: torch.device, batch_size: int = 512,
                  key: DataKey | None = None) -> pa.Table:
    table = open_shard(manifest, shard_file, key).read()
    ids, x, _ = decode_batch(table, manifest.scale)
    probs = predict_proba(bundle.model, torch.from_numpy(x), device, batch_size)
    return predictions_table(ids, probs.numpy(), bundle.class_names)


def predict_dataset(bundle: LoadedBundle, data: str | Path, out: str | Path, *,
                    splits: list[str] | None = None, device: torch.device | str = "cpu",
                    batch_size: int = 512, key: str | Path | DataKey | None = None) -> dict:
    """Predict every shard of the chosen splits; one output Parquet file per input shard.

    Each output is written atomically, then listed with its sha256 in out/manifest.json.
    """
    manifest = read_manifest(data)
    _check_compatible(bundle, manifest)
    data_key = dataset_key(manifest, key)  # encrypted shards: key, env:NAME or $DEEPFLEET_DATA_KEY
    device = torch.device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for split in splits or manifest.splits:
        for entry in manifest.shards(split):
            verify_shard(manifest, entry)
            table = predict_shard(bundle, manifest, entry.file, device, batch_size, data_key)
            target = out / f"pred-{Path(entry.file).stem}.parquet"
            sink = pa.BufferOutputStream()
            pq.write_table(table, sink, compression="zstd")
            write_bytes_atomic(target, sink.getvalue().to_pybytes())
            entries.append({"file": target.name, "input": entry.file, "split": split,
                            "rows": table.num_rows, "sha256": sha256_file(target)})
    result = {"bundle": str(bundle.root), "data": str(manifest.root),
              "data_manifest_sha256": manifest.digest(), "files": entries,
              "rows": sum(e["rows"] for e in entries)}
    write_json_atomic(out / "manifest.json", result)
    return result
