"""Whole folders between a local disk and a storage location, one file at a time.

Downloads land under a temporary name beside the target and are renamed into place, so a
reader on the same node (another rank sharing the folder) never sees a half-written file,
and two ranks fetching the same file at once both end with the whole file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from deepfleet.storage._settings import cache_root
from deepfleet.storage._store import PART, Store


def node_local(kind: str, url: str) -> Path:
    """The folder of this node that keeps a local copy of `url` (a run's working copy, a
    fetched bundle): $DEEPFLEET_CACHE/KIND/SCHEME/BUCKET/PREFIX, ~/.cache/deepfleet by
    default; the same for every process of the node."""
    parts = urlsplit(url)
    names = [parts.scheme, parts.hostname or "", *parts.path.split("/")]
    return Path(cache_root(), kind, *[n for n in names if n and n not in (".", "..")])


def fetch_file(store: Store, name: str, dest: Path) -> None:
    """The object `name` as the local file `dest`, replaced atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = dest.with_name(f".{dest.name}{PART}{secrets.token_hex(6)}")
    try:
        store.download(name, temp)
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)


def download_tree(store: Store, prefix: str, dest: Path, skip: Iterable[str] = ()) -> list[str]:
    """Every object under `prefix` into the local folder `dest` (same relative names),
    leaving out names under any of the `skip` prefixes; returns the names fetched."""
    prefix = prefix.strip("/")
    skipped = tuple(s.strip("/") + "/" for s in skip)
    fetched = []
    for name in store.list(prefix):
        rel = name[len(prefix) + 1 :] if prefix else name
        if rel.startswith(skipped):
            continue
        fetch_file(store, name, dest / rel)
        fetched.append(rel)
    return fetched


def upload_files(local: Path, store: Store, names: Iterable[str], prefix: str = "") -> None:
    """The local files `local/NAME` as `prefix/NAME`, each written atomically, in order (a
    caller that names a marker file last makes it appear after the rest)."""
    for name in names:
        store.put_file(local / name, f"{prefix.strip('/')}/{name}" if prefix else name)
