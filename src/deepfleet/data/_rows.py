"""Samples read on demand: arrays in files, never whole in memory, cheap to send to a worker.

A source gives its features as one of these instead of an array. Each has the array
interface the shard writer uses (dtype, shape, nbytes, len, rows[index array] -> ndarray)
and pickles as its file names and offsets, so a pool worker reads its own rows from disk
instead of receiving them. Compressed inputs (gzip, zip members, tar members, CSV) are first
streamed into a raw temporary file (`spill`), which is then memory-mapped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

_COPY_CHUNK = 8 << 20
_SPAN = 8 << 20  # bytes of a file MappedArray maps at once


def row_dtype(count: int) -> type:
    """The smallest of int32 and int64 that numbers `count` rows."""
    return np.int32 if count < 2**31 else np.int64


def index_rows(source: Any, key: Any) -> np.ndarray:
    """NumPy-style indexing (an int, a slice, an index array, optionally with more axes
    after it) through `source.read_rows(index array)`."""
    first, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
    single = not isinstance(first, slice) and np.ndim(first) == 0
    # No whole-size temporaries beyond the row numbers themselves (int32 while they fit):
    # reading a million labels at once is a prepare's first peak.
    if isinstance(first, slice):
        rows = np.arange(*first.indices(len(source)), dtype=row_dtype(len(source)))
    else:
        rows = np.atleast_1d(np.asarray(first, dtype=np.int64))
        if len(rows) and rows.min() < 0:
            rows = np.where(rows < 0, rows + len(source), rows)
    out = source.read_rows(rows)
    if single:
        out = out[0]
    return out[rest] if rest else out


class MappedArray:
    """An N x ... array stored row-major in a file at `offset`, mapped a span at a time.

    `record` is the bytes of one stored row and `skip` the bytes to leave at its start
    (CIFAR-10 records: one label byte, then the pixels).
    """

    def __init__(
        self,
        path: str | Path,
        dtype: str,
        shape: tuple[int, ...],
        offset: int = 0,
        record: int | None = None,
        skip: int = 0,
        cast: str | None = None,
    ) -> None:
        self.path, self.dtype_name, self.full_shape = str(path), np.dtype(dtype).str, tuple(shape)
        self.offset, self.skip = int(offset), int(skip)
        width = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
        self.record = int(record or width)
        self.cast = cast  # a dtype the rows are converted to as they are read

    @property
    def dtype(self) -> np.dtype:
        if self.cast:
            return np.dtype(self.cast)
        return np.dtype(self.dtype_name).newbyteorder("=")  # rows are returned native

    @property
    def shape(self) -> tuple[int, ...]:
        return self.full_shape

    @property
    def ndim(self) -> int:
        return len(self.full_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.full_shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.full_shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return index_rows(self, key)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # all rows: small sets, tests
        return np.asarray(self[:], dtype=dtype)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows, gathered from spans of the file mapped one at a time: sorted rows are
        cut into spans of at most _SPAN bytes, each mapped, gathered from and unmapped, so
        the mapped (resident) file pages never exceed one span, however scattered the rows."""
        width = int(np.prod(self.full_shape[1:])) * np.dtype(self.dtype_name).itemsize
        out = np.empty((len(rows), width), np.uint8)
        if len(rows) < 2 or bool(np.all(rows[1:] >= rows[:-1])):  # the writer's rows: sorted
            order, ordered = np.arange(len(rows)), rows
        else:
            order = np.argsort(rows, kind="stable")
            ordered = rows[order]
        start = 0
        while start < len(ordered):
            first = int(ordered[start])
            stop = int(np.searchsorted(ordered, first + max(1, _SPAN // self.record), "left"))
            count = int(ordered[stop - 1]) - first + 1
            span = np.memmap(
                self.path,
                np.uint8,
                mode="r",
                offset=self.offset + first * self.record,
                shape=(count, self.record),
            )
            out[order[start:stop]] = span[
                ordered[start:stop] - first, self.skip : self.skip + width
            ]
            del span  # unmapped here, before the next span is mapped
            start = stop
        values = out.view(np.dtype(self.dtype_name)).reshape(-1, *self.full_shape[1:])
        return values.astype(self.dtype, copy=False)


class ConcatRows:
    """Several row sources of one dtype and sample shape, one after another (CIFAR-10's
    batch files, MNIST's train and t10k files)."""

    def __init__(self, parts: list[Any]) -> None:
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    @property
    def dtype(self) -> np.dtype:
        return self.parts[0].dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self.starts[-1]), *self.parts[0].shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, key) -> np.ndarray:
        return index_rows(self, key)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:  # all rows: small sets, tests
        return np.asarray(self[:], dtype=dtype)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        for k in np.unique(which):
            mine = which == k
            out[mine] = self.parts[k][rows[mine] - self.starts[k]]
        return out


class SpillFolder:
    """A temporary folder for raw copies of compressed inputs; removed with the Samples that
    keep it (Samples.keep) or at exit."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="deepfleet-spill-")
        self.path = Path(self._dir.name)
        self._count = 0

    def spill(self, stream: IO[bytes], skip: int = 0) -> Path:
        """Copy a readable byte stream into a new file here, in chunks (bounded memory),
        leaving out its first `skip` bytes."""
        self._count += 1
        out = self.path / f"{self._count:05d}.raw"
        if skip:
            stream.read(skip)
        with out.open("wb") as sink:
            shutil.copyfileobj(stream, sink, _COPY_CHUNK)
        return out

    def cleanup(self) -> None:
        self._dir.cleanup()
