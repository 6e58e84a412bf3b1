"""A node-local cache of shard files under a byte limit, verified against their sha256.

Layout under the cache folder:

    .lock                     held while space is counted, reserved or freed
    objects/<sha256>          complete, verified files; mtime = last use (for LRU)
    incoming/<sha256>.lock    one downloader per file per node
    incoming/<sha256>.<pid>.<bytes>.part   a download in progress, its size reserved

Files are named by their digest, so a file is the same wherever it came from and is
verified once, when it arrives (a mismatch is an error and nothing is kept). The total of
complete files plus the sizes reserved by downloads in progress never exceeds the limit:
space is reserved under the lock before a byte is written, by evicting the least recently
used files that no reader holds. Readers hold a shared flock on the file they use, and
eviction skips a file it cannot lock exclusively. A downloader holds an exclusive lock on its
reservation file, so a reservation nobody holds belongs to a process that died and is
dropped (locks, unlike process ids, mean the same in every container sharing the folder).
Everything is safe with several processes of a node sharing the folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from deepfleet.errors import StorageError
from deepfleet.storage._lock import locked, try_exclusive
from deepfleet.storage._store import Store

log = logging.getLogger("deepfleet.storage")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"^([0-9a-f]{64})\.(\d+)\.(\d+)\.part$")


class ShardCache:
    """Files of one Store, cached under `folder` within `limit_bytes`."""

    def __init__(
        self,
        store: Store,
        folder: str | os.PathLike[str],
        limit_bytes: int,
        prefetch_workers: int = 1,
        wait_s: float = 120.0,
    ) -> None:
        if limit_bytes <= 0:
            raise StorageError(folder, f"cache limit must be > 0 bytes, got {limit_bytes}")
        self.store = store
        self.root = Path(folder)
        self.limit = limit_bytes
        self.wait_s = wait_s
        self.objects = self.root / "objects"
        self.incoming = self.root / "incoming"
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
            self.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StorageError(folder, err.strerror or str(err)) from None
        self._pool = ThreadPoolExecutor(prefetch_workers, thread_name_prefix="shard-prefetch")
        self._pending: dict[str, Future] = {}

    # -- reading -------------------------------------------------------------------------

    @contextmanager
    def open(self, name: str, sha256: str) -> Iterator[Path]:
        """The local path of `name`, downloaded and verified if needed, kept from eviction
        for the duration of the block."""
        fd, path = self._pin(name, _check_digest(sha256))
        try:
            yield path
        finally:
            os.close(fd)

    def fetch(self, name: str, sha256: str) -> Path:
        """`name` cached and verified; the path may be evicted later by other readers when
        the cache is full (use `open` to keep it while reading)."""
        fd, path = self._pin(name, _check_digest(sha256))
        os.close(fd)
        return path

    def hold(self, name: str, sha256: str) -> Held:
        """`name` cached and verified, kept from eviction until the Held is released (for a
        reader whose lifetime is not a block, e.g. an open Parquet file)."""
        fd, path = self._pin(name, _check_digest(sha256))
        return Held(path, fd)

    def prefetch(self, items: Iterable[tuple[str, str]]) -> None:
        """Download these (name, sha256) in the background, in order; a failure is left for
        `open` to report."""
        for name, sha256 in items:
            sha256 = _check_digest(sha256)
            running = self._pending.get(sha256)
            if (running is None or running.done()) and not (self.objects / sha256).exists():
                self._pending[sha256] = self._pool.submit(self._quiet_ensure, name, sha256)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ShardCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def usage(self) -> int:
        """Bytes in the cache: complete files plus reservations of live downloads."""
        return self._usage()[0]

    # -- internals -----------------------------------------------------------------------

    def _pin(self, name: str, sha256: str) -> tuple[int, Path]:
        path = self.objects / sha256
        for _ in range(5):
            with locked(self.root / ".lock"):
                fd = self._try_pin(path)
            if fd is not None:
                self._pending.pop(sha256, None)  # a finished prefetch: forget it
                return fd, path
            pending = self._pending.pop(sha256, None)
            if pending is not None:
                pending.result()  # the prefetch has it (or failed quietly: fetch again)
                continue
            self._ensure(name, sha256)
        raise StorageError(self.store.url(name), "evicted again and again: raise the cache limit")

    @staticmethod
    def _try_pin(path: Path) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.utime(path)  # most recently used
        return fd

    def _quiet_ensure(self, name: str, sha256: str) -> None:
        try:
            self._ensure(name, sha256)
        except Exception as err:  # noqa: BLE001 - reported when the file is opened
            log.debug("prefetch of %s failed: %s", self.store.url(name), err)

    def _ensure(self, name: str, sha256: str) -> None:
        """Download and verify `name` unless the cache has it; one downloader per file."""
        final = self.objects / sha256
        with locked(self.incoming / f"{sha256}.lock"):
            if final.exists():
                return
            size = self.store.size(name)
            if size > self.limit:
                raise StorageError(
                    self.store.url(name),
                    f"{size} bytes do not fit in the cache limit of {self.limit} bytes",
                )
            part = self.incoming / f"{sha256}.{os.getpid()}.{size}.part"
            held = self._reserve(part, size)
            try:
                _, digest = self.store.download(name, part, max_bytes=size)
                if digest != sha256:
                    raise StorageError(
                        self.store.url(name),
                        f"sha256 {digest[:16]}... does not match the expected "
                        f"{sha256[:16]}... (corrupt or changed); nothing was cached",
                    )
                # Under the lock: another process counting the space scans objects/, then
                # incoming/, and a file moving between its two scans would count as nothing.
                with locked(self.root / ".lock"):
                    os.replace(part, final)  # atomic: readers see all of it or nothing
            finally:
                part.unlink(missing_ok=True)
                os.close(held)

    def _usage(self) -> tuple[int, list[tuple[float, Path, int]]]:
        """(bytes used, complete files as (mtime, path, size)); drops dead reservations."""
        used, files = 0, []
        for entry in os.scandir(self.objects):
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            used += st.st_size
            files.append((st.st_mtime, Path(entry.path), st.st_size))
        for entry in os.scandir(self.incoming):
            m = _PART.match(entry.name)
            if not m:
                continue
            if self._held(Path(entry.path)):
                used += int(m.group(3))
        return used, sorted(files)

    @staticmethod
    def _held(part: Path) -> bool:
        """Whether a live download holds `part`; one that nobody holds is removed."""
        try:
            fd = os.open(part, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if try_exclusive(fd):
                part.unlink(missing_ok=True)  # its process died mid-download
                return False
            return True
        finally:
            os.close(fd)

    def _reserve(self, part: Path, size: int) -> int:
        """Make room for `size` bytes and claim it by creating `part`, under the lock;
        returns the descriptor whose lock marks the reservation as live."""
        deadline = time.monotonic() + self.wait_s
        while True:
            with locked(self.root / ".lock"):
                used, files = self._usage()
                for _, path, nbytes in files:
                    if used + size <= self.limit:
                        break
                    if self._evict(path):
                        used -= nbytes
                if used + size <= self.limit:
                    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    return fd
            if time.monotonic() > deadline:
                raise StorageError(
                    self.root,
                    f"cache full: {used} of {self.limit} bytes are in use by readers or "
                    "downloads; raise the cache limit",
                )
            time.sleep(0.05)  # readers hold every file: wait for one to let go

    @staticmethod
    def _evict(path: Path) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if not try_exclusive(fd):
                return False  # a reader holds it
            path.unlink()
            return True
        finally:
            os.close(fd)


class Held:
    """A cached file kept from eviction (a shared lock on it) until `release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing drops the shared lock: the file may be evicted again


def _check_digest(sha256: str) -> str:
    digest = sha256.lower()
    if not _SHA256.match(digest):
        raise StorageError(None, f"expected a sha256 hex digest, got {sha256!r}")
    return digest
