"""Opening shards (plain or encrypted) and reading a whole split into memory."""

from __future__ import annotations

import hmac
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from deepfleet.data._crypto import DataKey, check_key, decryption_properties, load_data_key
from deepfleet.data._manifest import (
    DIGEST,
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    canonical_bytes,
    read_manifest,
    rows_problem,
    verify_shard,
)
from deepfleet.data._preprocess import Preprocessing
from deepfleet.data._tensor import tensor_values
from deepfleet.errors import UserError


@dataclass
class SplitArrays:
    """One split as model-ready tensors (x float32 scaled, or int64 token ids)."""

    ids: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def decode_raw(table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ids, x in its stored dtype, targets: a whole record batch at once (no per-sample
    Python). Targets are one int64 class index per row, or a tensor column like x."""
    label = table.column("label")
    y = tensor_values(table, "label") if pa.types.is_fixed_size_binary(label.type) else None
    column = table.column("x")
    encoded = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
    return (
        table.column("id").to_numpy(),
        # encoded images: an object array of the files' bytes, decoded by the stream
        column.to_numpy(zero_copy_only=False) if encoded else tensor_values(table),
        label.to_numpy() if y is None else y,
    )


def decode_batch(table, preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole record batch to model-ready arrays (x float32 scaled, or int64 token ids)."""
    ids, x, y = decode_raw(table)
    return ids, preprocessing.apply(x), y


def dataset_key(manifest: Manifest, key: str | Path | bytes | DataKey | None) -> DataKey | None:
    """The checked key for `manifest` (None for plain shards); see deepfleet.data._crypto."""
    if not manifest.encryption:
        return None
    data_key = check_key(manifest.encryption, load_data_key(key), str(manifest.root))
    assert data_key is not None
    seal = manifest.raw[DIGEST].get("hmac_sha256")
    if not isinstance(seal, str) or not hmac.compare_digest(
        seal, data_key.authenticate(canonical_bytes(manifest.raw))
    ):
        raise UserError(
            f"{manifest.where(MANIFEST_NAME)}: not authenticated by the data key "
            "(edited after it was written, or sealed with another key)"
        )
    return data_key


def open_shard(
    manifest: Manifest, entry: ShardEntry, key: DataKey | None = None, *, verify: bool = True
) -> pq.ParquetFile:
    """A shard's Parquet reader, refused when its bytes do not match the manifest's sha256
    (checked the first time this manifest's reader opens it; `verify=False` skips it) or its
    footer's row count is not the manifest's; encrypted shards need the key returned by
    dataset_key. Readers check the shards they read, as they read them: nothing hashes a
    whole data set before a stage.

    A remote shard is read from the node's cache, which verified it while downloading it;
    the cached copy is held (kept from eviction) until the reader is closed and dropped."""
    held = None
    if manifest.remote is not None:
        held = manifest.remote.hold(entry)
        source = held.path
    else:
        if verify:
            verify_shard(manifest, entry)
        source = Path(manifest.root) / entry.file
    props = decryption_properties(key) if key is not None else None
    try:
        handle = pq.ParquetFile(source, decryption_properties=props)
        problem = rows_problem(entry, handle.metadata.num_rows)
    except (OSError, ValueError, pa.ArrowException) as err:  # ValueError: the KMS client's
        if held is not None:
            held.release()
        raise UserError(
            f"shard {entry.file}: cannot be read ({str(err).splitlines()[0]})"
        ) from None
    if problem:
        if held is not None:
            held.release()
        raise UserError(problem)
    if held is not None:
        weakref.finalize(handle, held.release)
    return handle


def read_split(
    data: str | Path | Manifest,
    split: str,
    *,
    verify: bool = True,
    key: str | Path | bytes | DataKey | None = None,
) -> SplitArrays:
    manifest = data if isinstance(data, Manifest) else read_manifest(data)
    data_key = dataset_key(manifest, key)
    ids, xs, ys = [], [], []
    for entry in manifest.shards(split):
        i, x, y = decode_batch(
            open_shard(manifest, entry, data_key, verify=verify).read(), manifest.preprocessing
        )
        ids.append(i)
        xs.append(x)
        ys.append(y)
    return SplitArrays(
        ids=torch.from_numpy(np.concatenate(ids)),
        x=torch.from_numpy(np.concatenate(xs)),
        y=torch.from_numpy(np.concatenate(ys)),
    )
