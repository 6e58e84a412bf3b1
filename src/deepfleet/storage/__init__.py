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
    "default_cache_dir": "deepfleet.storage._settings",
    "is_remote": "deepfleet.storage._remote_url",
    "is_transient": "deepfleet.storage._retry",
    "parse_bytes": "deepfleet.storage._settings",
    "redact": "deepfleet.storage._url",
    "resolve": "deepfleet.storage._url",
    "retrying": "deepfleet.storage._retry",
}

if TYPE_CHECKING:
    from deepfleet.storage._cache import Held, ShardCache
    from deepfleet.storage._remote_url import is_remote
    from deepfleet.storage._retry import RetryPolicy, is_transient, retrying
    from deepfleet.storage._settings import CacheSettings, default_cache_dir, parse_bytes
    from deepfleet.storage._store import Store
    from deepfleet.storage._url import Location, redact, resolve

__all__ = [
    "CacheSettings",
    "Held",
    "Location",
    "RetryPolicy",
    "ShardCache",
    "Store",
    "default_cache_dir",
    "is_remote",
    "is_transient",
    "parse_bytes",
    "redact",
    "resolve",
    "retrying",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
