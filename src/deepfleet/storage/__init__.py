"""Where data and runs live: URLs to file systems (a local path, s3://, anything fsspec
reads), atomic writes and listings with retries, and a node-local verified shard cache.

Names are imported on first use: `is_remote` and the cache settings are asked at start-up
by commands that never touch pyarrow's file systems."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepfleet._lazy import lazy_exports

_WHERE = {
    "CacheSettings": "deepfleet.storage._settings",
    "Held": "deepfleet.storage._cache",
    "Location": "deepfleet.storage._url",
    "RetryPolicy": "deepfleet.storage._retry",
    "ShardCache": "deepfleet.storage._cache",
    "Store": "deepfleet.storage._store",
    "cache_root": "deepfleet.storage._settings",
    "default_cache_dir": "deepfleet.storage._settings",
    "download_tree": "deepfleet.storage._tree",
    "fetch_file": "deepfleet.storage._tree",
    "is_remote": "deepfleet.storage._remote_url",
    "is_transient": "deepfleet.storage._retry",
    "node_local": "deepfleet.storage._tree",
    "parse_bytes": "deepfleet.storage._settings",
    "redact": "deepfleet.storage._url",
    "resolve": "deepfleet.storage._url",
    "retrying": "deepfleet.storage._retry",
    "upload_files": "deepfleet.storage._tree",
}

if TYPE_CHECKING:
    from deepfleet.storage._cache import Held, ShardCache
    from deepfleet.storage._remote_url import is_remote
    from deepfleet.storage._retry import RetryPolicy, is_transient, retrying
    from deepfleet.storage._settings import (
        CacheSettings,
        cache_root,
        default_cache_dir,
        parse_bytes,
    )
    from deepfleet.storage._store import Store
    from deepfleet.storage._tree import (
        download_tree,
        fetch_file,
        node_local,
        upload_files,
    )
    from deepfleet.storage._url import Location, redact, resolve

__all__ = [
    "CacheSettings",
    "Held",
    "Location",
    "RetryPolicy",
    "ShardCache",
    "Store",
    "cache_root",
    "default_cache_dir",
    "download_tree",
    "fetch_file",
    "is_remote",
    "is_transient",
    "node_local",
    "parse_bytes",
    "redact",
    "resolve",
    "retrying",
    "upload_files",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
