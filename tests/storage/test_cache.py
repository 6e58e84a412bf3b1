"""The node-local shard cache against a real S3 server: digests checked on arrival, the byte
limit held with several processes at once, least-recently-used eviction, prefetch."""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from s3_fixtures import *  # noqa: F403 - the S3 server fixtures

from deepfleet.errors import StorageError
from deepfleet.storage import ShardCache, Store

FILE = 96 * 1024


def _payload(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (FILE // 32)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def shards(bucket, s3_options) -> tuple[Store, dict[str, str]]:
    """Twelve objects of 96 KiB in a fresh bucket, and their digests (as a manifest lists)."""
    store = Store(f"s3://{bucket}/data", s3_options)
    manifest = {}
    for i in range(12):
        name = f"shards/part-{i:03d}.bin"
        store.write_bytes(name, _payload(i))
        manifest[name] = _digest(_payload(i))
    return store, manifest


def test_a_flipped_byte_is_caught_and_nothing_is_cached(shards, tmp_path):
    store, manifest = shards
    name = "shards/part-003.bin"
    corrupt = bytearray(_payload(3))
    corrupt[FILE // 2] ^= 0x01
    store.write_bytes(name, bytes(corrupt))
    with ShardCache(store, tmp_path / "c", limit_bytes=1 << 20) as cache:
        with pytest.raises(StorageError) as info:
            cache.fetch(name, manifest[name])
        message = str(info.value)
        assert message.startswith(f"{store.url(name)}: sha256 ") and "does not match" in message
        assert not list((tmp_path / "c" / "objects").iterdir())
        assert not [p for p in (tmp_path / "c" / "incoming").iterdir() if p.suffix == ".part"]
        assert cache.usage() == 0
        # The good bytes back on the server: the same call now succeeds.
        store.write_bytes(name, _payload(3))
        assert cache.fetch(name, manifest[name]).read_bytes() == _payload(3)


def test_lru_eviction_keeps_the_limit_and_the_recent_files(shards, tmp_path):
    store, manifest = shards
    names = sorted(manifest)
    with ShardCache(store, tmp_path / "c", limit_bytes=4 * FILE) as cache:
        for name in names[:4]:
            cache.fetch(name, manifest[name])
        time.sleep(0.01)
        cache.fetch(names[0], manifest[names[0]])  # used again: now the most recent
        cache.fetch(names[4], manifest[names[4]])  # evicts the least recent: names[1]
        kept = {p.name for p in (tmp_path / "c" / "objects").iterdir()}
        assert kept == {manifest[n] for n in (names[0], names[2], names[3], names[4])}
        assert cache.usage() == 4 * FILE
        # A file held open by a reader is never evicted.
        with cache.open(names[2], manifest[names[2]]) as held:
            for name in names[5:9]:
                cache.fetch(name, manifest[name])
            assert held.read_bytes() == _payload(2)
        assert cache.usage() <= 4 * FILE
        with pytest.raises(StorageError, match="do not fit in the cache limit"):
            ShardCache(store, tmp_path / "small", limit_bytes=FILE - 1).fetch(
                names[0], manifest[names[0]]
            )
        with pytest.raises(StorageError, match="expected a sha256"):
            cache.fetch(names[0], "abc")


def test_prefetch_downloads_the_next_files_in_the_background(shards, tmp_path):
    store, manifest = shards
    names = sorted(manifest)
    with ShardCache(store, tmp_path / "c", limit_bytes=1 << 20) as cache:
        cache.prefetch((n, manifest[n]) for n in names[:3])
        deadline = time.monotonic() + 30
        objects = tmp_path / "c" / "objects"
        while len(list(objects.iterdir())) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert {p.name for p in objects.iterdir()} == {manifest[n] for n in names[:3]}
        with cache.open(names[1], manifest[names[1]]) as path:
            assert path.read_bytes() == _payload(1)


def _reader(url: str, options: dict, folder: str, limit: int, manifest: dict, seed: int) -> int:
    """One process of a node: every file twice, in its own order, each checked."""
    import random

    store = Store(url, options)
    names = sorted(manifest) * 2
    random.Random(seed).shuffle(names)
    with ShardCache(store, folder, limit_bytes=limit) as cache:
        cache.prefetch((n, manifest[n]) for n in names[:2])
        for name in names:
            with cache.open(name, manifest[name]) as path:
                assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest[name]
    return len(names)


def _bytes_on_disk(folder: Path) -> int:
    total = 0
    for sub in ("objects", "incoming"):
        for entry in os.scandir(folder / sub):
            if not entry.name.endswith(".lock"):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
    return total


def test_several_processes_never_exceed_the_limit(shards, s3_options, tmp_path):
    store, manifest = shards
    folder = tmp_path / "node-cache"
    limit = 3 * FILE + FILE // 2  # less than a third of the data
    ShardCache(store, folder, limit_bytes=limit).close()  # the folders exist for the monitor
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _bytes_on_disk(folder))

    watcher = threading.Thread(target=watch)
    watcher.start()
    args = [(store.url(), s3_options, str(folder), limit, manifest, seed) for seed in range(3)]
    try:
        with multiprocessing.get_context("spawn").Pool(3) as pool:
            counts = pool.starmap(_reader, args)
    finally:
        stop.set()
        watcher.join()
    assert counts == [24, 24, 24]
    assert 0 < peak[0] <= limit, peak[0]
    assert _bytes_on_disk(folder) <= limit


def test_a_dead_downloads_reservation_is_dropped_and_a_live_one_counts(tmp_path):
    import fcntl

    store = Store(tmp_path / "source")
    store.write_bytes("a.bin", b"x" * 10)
    with ShardCache(store, tmp_path / "c", limit_bytes=100) as cache:
        incoming = tmp_path / "c" / "incoming"
        stale = incoming / f"{'0' * 64}.4242.90.part"  # its process died: nobody holds it
        stale.write_bytes(b"partial")
        live = incoming / f"{'1' * 64}.4243.60.part"
        fd = os.open(live, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a download in progress in another process
        try:
            assert cache.usage() == 60
            assert not stale.exists() and live.exists()
            assert cache.fetch("a.bin", _digest(b"x" * 10)).read_bytes() == b"x" * 10
            assert cache.usage() == 70
        finally:
            os.close(fd)
        assert cache.usage() == 10 and not live.exists()
