"""A prepared data set at a URL (s3://bucket/prefix, ...): its manifest and small files read
through a Store, its shards through the node's verified ShardCache.

Readers never open a remote shard in place: a shard is downloaded once per node into the
cache, checked against the manifest's sha256 while it arrives (so it is never hashed a second
time), and read from the local copy, which is held (kept from eviction) while a Parquet
reader has it open. The Store and the cache are made on first use in each process: a
DataLoader worker (forked or spawned) makes its own, because neither the S3 client nor the
prefetch thread survives a fork.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from deepfleet.errors import StorageError
from deepfleet.storage import CacheSettings, Held, ShardCache, Store

if TYPE_CHECKING:
    from deepfleet.config import DataSection
    from deepfleet.data._manifest import Manifest, ShardEntry


class RemoteData:
    """The objects of one prepared data set at `url`, and the node's cache of its shards."""

    def __init__(
        self,
        url: str,
        options: Mapping[str, Any] | None = None,
        cache: CacheSettings | None = None,
    ) -> None:
        self.options = dict(options or {})
        self.cache_settings = cache or CacheSettings.of(None, None)
        self._pid = os.getpid()
        self._store: Store | None = Store(url, self.options)  # checks the URL and options now
        self.url = self._store.url()
        self._cache: ShardCache | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None, "_cache": None}

    def _fresh(self) -> None:
        if self._pid != os.getpid():  # a forked child: the parent's client and thread are gone
            self._pid, self._store, self._cache = os.getpid(), None, None

    @property
    def store(self) -> Store:
        self._fresh()
        if self._store is None:
            self._store = Store(self.url, self.options)
        return self._store

    @property
    def cache(self) -> ShardCache:
        self._fresh()
        if self._cache is None:
            settings = self.cache_settings
            self._cache = ShardCache(self.store, settings.folder, settings.limit)
        return self._cache

    def read_bytes(self, name: str) -> bytes:
        return self.store.read_bytes(name)

    def hold(self, entry: ShardEntry) -> Held:
        """The shard in the local cache (downloaded and verified if needed), held."""
        return self.cache.hold(entry.file, entry.sha256)

    def prefetch(self, entries: Iterable[ShardEntry]) -> None:
        """Start downloading these shards in the background, in order."""
        self.cache.prefetch((e.file, e.sha256) for e in entries)

    def problem(self, manifest: Manifest, entry: ShardEntry) -> str | None:
        """What is wrong with one remote shard (missing, bytes changed, row count), or None:
        its bytes are hashed as they stream past, nothing is kept."""
        try:
            _, digest = self.store.download(entry.file, None)
        except StorageError as err:
            if err.cause == "no such object":
                return f"shard {entry.file} is missing from {self.url}"
            raise
        if digest != entry.sha256:
            return f"shard {entry.file} does not match its sha256 in the manifest"
        if manifest.encryption:  # an encrypted footer is checked by the reader, with the key
            return None
        import pyarrow.parquet as pq

        from deepfleet.data._manifest import rows_problem
        from deepfleet.storage import retrying

        path = self.store.location.join(entry.file)
        meta = retrying(
            lambda: pq.read_metadata(path, filesystem=self.store.fs), self.store.url(entry.file)
        )
        return rows_problem(entry, meta.num_rows)


def cache_settings(data: DataSection) -> CacheSettings:
    """A job's [data] cache_dir and cache_limit, defaults filled in."""
    return CacheSettings.of(data.cache_dir, data.cache_limit)


def open_prepared(where: str | os.PathLike[str], data: DataSection) -> Manifest:
    """The prepared data set at a path or URL, read with the job's storage options and
    cache settings."""
    from deepfleet.data._manifest import read_manifest

    return read_manifest(where, data.storage_options, cache_settings(data))
