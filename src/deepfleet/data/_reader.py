"""Reading a split of a prepared data set into memory, shard by shard, checksums checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from deepfleet.data._manifest import Manifest, read_manifest, verify_shard


@dataclass
class SplitArrays:
    """One split as model-ready tensors (x float32, already scaled)."""

    ids: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def decode_batch(table, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole record batch to arrays at once (no per-sample Python)."""
    x = table.column("x").combine_chunks().to_numpy_ndarray()
    x = x.astype(np.float32) * np.float32(scale) if scale != 1.0 else x.astype(np.float32)
    ids = table.column("id").to_numpy()
    y = table.column("label").to_numpy()
    return ids, x, y


def read_split(data: str | Path | Manifest, split: str, *, verify: bool = True) -> SplitArrays:
    manifest = data if isinstance(data, Manifest) else read_manifest(data)
    ids, xs, ys = [], [], []
    for entry in manifest.shards(split):
        if verify:
            verify_shard(manifest, entry)
        table = pq.read_table(manifest.root / entry.file)
        i, x, y = decode_batch(table, manifest.scale)
        ids.append(i)
        xs.append(x)
        ys.append(y)
    return SplitArrays(
        ids=torch.from_numpy(np.concatenate(ids)),
        x=torch.from_numpy(np.concatenate(xs)),
        y=torch.from_numpy(np.concatenate(ys)),
    )
