"""prepare --out URL: the data set is written into a local staging folder exactly as for a
local output (same bytes, resumable), then each file is uploaded atomically and the manifest
last, so a reader finds a manifest only when every shard it names is in place.

A prepare that was killed during the upload and runs again keeps what it can: the local
staging folder (if this node still has it) resumes the shards, and a file already at the
URL with the same name and size is not sent again. Shard names end in the first 12 hex
digits of their sha256, so the same name and size is the same shard (and every reader
checks the full sha256 anyway).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from deepfleet.data._manifest import MANIFEST_NAME
from deepfleet.errors import UserError
from deepfleet.storage import CacheSettings, Store

log = logging.getLogger("deepfleet.data")


def remote_output(url: str, options: dict | None) -> Store:
    """The Store of a new remote data set; refused when a data set is already there."""
    store = Store(url, options)
    if MANIFEST_NAME in store.list():  # a listing also names a missing bucket at once
        raise UserError(f"{store.url()}: a prepared data set is already there")
    return store


def local_twin(store: Store, cache: CacheSettings) -> Path:
    """The local folder a remote output is staged in (beside the node's shard cache, one
    per URL, so a re-run on this node finds it)."""
    key = hashlib.sha256(store.url().encode()).hexdigest()[:16]
    return cache.folder / "prepare" / key / "out"


def upload_dataset(stage: Path, store: Store, names: list[str]) -> int:
    """Upload `names` from `stage` (shards and extra files) and then the manifest; returns
    the bytes sent. A file already at the URL with the same size is skipped."""
    present = set(store.list())
    sent = 0
    for name in names:
        size = (stage / name).stat().st_size
        if name in present and store.size(name) == size:
            log.info("prepare: %s is already uploaded", store.url(name))
            continue
        store.put_file(stage / name, name)
        sent += size
    store.put_file(stage / MANIFEST_NAME, MANIFEST_NAME)  # last: it vouches for the rest
    return sent + (stage / MANIFEST_NAME).stat().st_size
