"""Reads, atomic writes and listings under one storage location, with retries.

Atomic writes. S3 makes a whole object visible at once (a PUT, or a multipart upload when it
completes), but pyarrow's output stream completes the upload when it is closed, also when
the writer failed half-way, which would leave a truncated object under the final name. So
every write goes to a temporary name beside the target (`.NAME.part-RANDOM`) and is then
moved into place: a rename on a local disk, a server-side copy and delete on S3 (no bytes
through the client; the copy appears whole or not at all). A writer that dies leaves only a
temporary name, which listings skip. Readers check digests anyway (the shard cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from deepfleet.errors import StorageError
from deepfleet.storage._retry import RetryPolicy, retrying
from deepfleet.storage._url import Location, resolve

CHUNK = 4 << 20
PART = ".part-"


def _temporary(name: str) -> str:
    head, _, tail = name.rpartition("/")
    temp = f".{tail}{PART}{secrets.token_hex(6)}"
    return f"{head}/{temp}" if head else temp


class Store:
    """The objects under one URL (a local folder, s3://bucket/prefix, ...), by relative name."""

    def __init__(
        self,
        url: str | os.PathLike[str],
        options: Mapping[str, Any] | None = None,
        retry: RetryPolicy = RetryPolicy(),
    ) -> None:
        self.location: Location = resolve(url, options)
        self.retry = retry

    @property
    def fs(self) -> pafs.FileSystem:
        return self.location.fs

    def url(self, name: str = "") -> str:
        """The printable URL of `name` (no credentials, no query string)."""
        return f"{self.location.url}/{name}" if name else self.location.url

    def _run(self, op, name: str):
        try:
            return retrying(op, self.url(name), self.retry)
        except StorageError as err:
            if err.cause == "no such object or folder":
                raise self._missing(name) from None
            raise

    def _missing(self, name: str) -> StorageError:
        """A missing object, or the bucket itself missing: say which."""
        if self.location.is_s3:
            bucket = self.location.path.split("/", 1)[0]
            info = retrying(lambda: self.fs.get_file_info(bucket), self.url(), self.retry)
            if info.type == pafs.FileType.NotFound:
                return StorageError(f"s3://{bucket}", "the bucket does not exist")
        return StorageError(self.url(name), "no such object")

    def read_bytes(self, name: str) -> bytes:
        path = self.location.join(name)

        def read() -> bytes:
            with self.fs.open_input_stream(path) as stream:
                return stream.read()

        return self._run(read, name)

    def download(
        self, name: str, dest: Path | None, max_bytes: int | None = None
    ) -> tuple[int, str]:
        """`name` into the local file `dest` (replaced; None: only hashed); returns (bytes,
        sha256 hex). A read that fails in the middle starts again from the beginning. More
        than `max_bytes` is refused before it is written (the object changed since its size
        was read)."""
        path = self.location.join(name)

        def fetch() -> tuple[int, str]:
            digest, size = hashlib.sha256(), 0
            with (
                self.fs.open_input_stream(path) as stream,
                open(dest if dest is not None else os.devnull, "wb") as out,
            ):
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise StorageError(self.url(name), f"larger than its {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            return size, digest.hexdigest()

        return self._run(fetch, name)

    def size(self, name: str) -> int:
        path = self.location.join(name)

        def info() -> int:
            found = self.fs.get_file_info(path)
            if found.type != pafs.FileType.File:
                raise FileNotFoundError(path)
            return found.size

        return self._run(info, name)

    def exists(self, name: str) -> bool:
        path = self.location.join(name)
        return self._run(lambda: self.fs.get_file_info(path).type == pafs.FileType.File, name)

    def write_bytes(self, name: str, data: bytes) -> None:
        """`data` as `name`, atomically (see the module's note)."""
        self._write(name, lambda out: out.write(data))

    def put_file(self, local: str | os.PathLike[str], name: str) -> None:
        """The local file `local` as `name`, atomically."""

        def copy(out) -> None:
            with open(local, "rb") as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)

        self._write(name, copy)

    def delete(self, name: str) -> None:
        """Remove `name` if it is there (deleting what is missing is no error)."""
        path = self.location.join(name)

        def delete() -> None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.delete_file(path)

        self._run(delete, name)

    def _write(self, name: str, fill) -> None:
        final = self.location.join(name)
        temp = self.location.join(_temporary(name))
        parent = final.rpartition("/")[0]

        def write() -> None:
            if not self.location.is_s3 and parent:
                self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(temp) as out:
                fill(out)
            self.fs.move(temp, final)

        try:
            self._run(write, name)
        except BaseException:
            self._discard(temp)
            raise

    def _discard(self, path: str) -> None:
        # Never written, or the server is gone: a stray temporary name is harmless.
        with contextlib.suppress(OSError):
            self.fs.delete_file(path)

    def list(self, prefix: str = "") -> list[str]:
        """Relative names of the objects under `prefix`, sorted, temporary names left out."""
        root = self.location.join(prefix)

        def ls() -> list[pafs.FileInfo]:
            return self.fs.get_file_info(
                pafs.FileSelector(root, recursive=True, allow_not_found=True)
            )

        infos = self._run(ls, prefix)
        if not infos and self.location.is_s3:
            missing = self._missing(prefix)  # an empty prefix is fine; a missing bucket is not
            if missing.cause == "the bucket does not exist":
                raise missing
        base = self.location.path.rstrip("/") + "/"
        names = [
            i.path[len(base) :] if i.path.startswith(base) else i.path
            for i in infos
            if i.type == pafs.FileType.File
        ]
        return sorted(n for n in names if PART not in n.rpartition("/")[2])
