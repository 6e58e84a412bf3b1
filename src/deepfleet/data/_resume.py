"""Resumable prepare: shards are written into a staging folder beside the output, which a
killed prepare leaves behind; run again with the same inputs, it keeps every shard that is
complete and proves to hold the rows it should, and writes only the rest.

The staging folder records a fingerprint of the plan (source, split, shard layout, key,
format); a different plan starts afresh. A kept shard must match the sha256 in its name and
hold exactly the ids planned for it. The manifest is written last, then the folder is
renamed into place, so the output is complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfleet._atomic import sha256_file, write_json_atomic
from deepfleet.data._crypto import DataKey, decryption_properties

PLAN = "plan.json"


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def plan_fingerprint(plan: dict[str, Any], parts: dict[str, np.ndarray], ids: np.ndarray) -> str:
    """sha256 over the plan's settings and every split's ids, in order."""
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True, default=str).encode())
    for split in sorted(parts):
        digest.update(split.encode())
        digest.update(np.ascontiguousarray(ids[parts[split]], dtype=np.int64).tobytes())
    return digest.hexdigest()


def open_staging(out: Path, fingerprint: str) -> Path:
    """The staging folder for this plan: the one a killed run left, or a new one."""
    stage = staging_folder(out)
    plan = stage / PLAN
    if stage.exists():
        try:
            same = json.loads(plan.read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError, TypeError):
            same = False
        if same:
            return stage
        shutil.rmtree(stage)  # another plan's leftovers: nothing of it can be kept
    stage.mkdir(parents=True)
    write_json_atomic(plan, {"fingerprint": fingerprint})
    return stage


def kept_shard(
    stage: Path, split: str, index: int, ids: np.ndarray, key: DataKey | None
) -> dict[str, Any] | None:
    """The manifest entry of a shard a previous run completed, if it is sound; unsound or
    stray files for this slot are removed."""
    found = None
    for path in sorted(stage.glob(f"{split}-{index:05d}-*.parquet")):
        entry = _sound(path, ids, key) if found is None else None
        if entry is None:
            path.unlink()
        else:
            found = entry
    for tmp in stage.glob(f".{split}-{index:05d}.*.tmp"):  # a write the kill interrupted
        tmp.unlink()
    return found


def _sound(path: Path, ids: np.ndarray, key: DataKey | None) -> dict[str, Any] | None:
    digest = sha256_file(path)
    if not path.stem.endswith(digest[:12]):
        return None
    try:
        props = decryption_properties(key) if key is not None else None
        stored = pq.ParquetFile(path, decryption_properties=props).read(columns=["id"])
    except (OSError, ValueError, pa.ArrowException):
        return None
    if not np.array_equal(stored.column("id").to_numpy(), ids):
        return None
    return {"file": path.name, "rows": int(len(ids)), "sha256": digest}
