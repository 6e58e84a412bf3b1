"""The in-memory form every source produces before it is written to shards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Samples:
    """A data set with its targets. x is an array only for small built-in sets; sources
    give a row source read on demand (see _rows.py: memory-mapped files, file lists), so the
    samples are never all in memory. y and ids are in memory (one value a row).

    x keeps the source's own dtype (uint8 pixels stay uint8, 4x smaller than float32);
    `scale` turns it into model input: input = x.astype(float32) * scale, or, for token ids
    (`tokens`), input = int64(x). y is what the source gives until the task encodes it;
    class_names are None until then, unless the source names its classes itself.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str] | None
    description: str
    scale: float = 1.0
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    # Row indices of the source's own test set (MNIST's t10k, CIFAR-10's test_batch), if any.
    test_rows: np.ndarray | None = None
    target_names: list[str] | None = None  # names of a table's target columns
    targets_from: str = ""  # where the targets came from, for error messages
    tokens: bool = False  # x holds token ids (a text source)
    target_stats: dict = field(default_factory=dict)  # e.g. a vocabulary's size
    extra_files: dict[str, bytes] = field(default_factory=dict)  # e.g. tokenizer.json
    keep: object = None  # owner of temporary files behind x (or y), removed with it

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if not isinstance(self.y, MappedRows):
            self.y = np.asarray(self.y)
        if self.ids is None:
            self.ids = np.arange(len(self.y), dtype=np.int64)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


class MappedRows:
    """Rows of a 2-D array in a raw file, read on demand (np.memmap): a column range of them,
    so token windows of L + 1 give inputs [0, L) and targets [1, L + 1) without copies.
    Pickles as its path, so pool workers read their own rows instead of receiving them."""

    def __init__(self, path: str, dtype: str, rows: int, width: int, cols: slice) -> None:
        self.path, self.dtype_name, self.rows, self.width, self.cols = (
            path,
            dtype,
            rows,
            width,
            cols,
        )

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dtype_name)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, len(range(*self.cols.indices(self.width))))

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, rows) -> np.ndarray:
        data = np.memmap(self.path, self.dtype, mode="r", shape=(self.rows, self.width))
        return np.ascontiguousarray(data[rows][:, self.cols])
