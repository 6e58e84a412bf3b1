"""Where data and runs live: URLs to file systems (a local path, s3://, anything fsspec
reads), atomic writes and listings with retries, and a node-local verified shard cache."""

from deepfleet.storage._cache import ShardCache
from deepfleet.storage._retry import RetryPolicy, is_transient, retrying
from deepfleet.storage._store import Store
from deepfleet.storage._tree import (
    delete_object,
    download_tree,
    fetch_file,
    is_remote,
    node_local,
    upload_files,
)
from deepfleet.storage._url import Location, redact, resolve

__all__ = [
    "Location",
    "RetryPolicy",
    "ShardCache",
    "Store",
    "is_transient",
    "redact",
    "resolve",
    "retrying",
    "delete_object",
    "download_tree",
    "fetch_file",
    "is_remote",
    "node_local",
    "upload_files",
]
