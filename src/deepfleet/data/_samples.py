"""The in-memory form every source produces before it is written to shards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepfleet.errors import UserError


@dataclass
class Samples:
    """A whole labelled data set held in memory.

    x keeps the source's own dtype (uint8 pixels stay uint8, 4x smaller than float32);
    `scale` turns it into model input: input = x.astype(float32) * scale.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    description: str
    scale: float = 1.0
    ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    # Row indices of the source's own test set (MNIST's t10k, CIFAR-10's test_batch), if any.
    test_rows: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.ids is None:
            self.ids = np.arange(len(self.y), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])


def encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels as int64 class indices plus class names.

    Integer labels keep their values (names "0", "1", ...); any other labels (strings) are
    numbered in sorted order.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise UserError(
            f"{where}: labels must be one value per sample, got shape {list(values.shape)}"
        )
    if np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating):
        _refuse_measurements(values, where)
    if np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_):
        y = values.astype(np.int64)
        if len(y) and y.min() < 0:
            raise UserError(f"{where}: labels must be >= 0, found {int(y.min())}")
        top = int(y.max()) + 1 if len(y) else 0
        return y, [str(i) for i in range(top)]
    if np.issubdtype(values.dtype, np.floating):
        return encode_labels(values.astype(np.int64), where)
    names, y = np.unique(values.astype(str), return_inverse=True)
    return y.astype(np.int64), [str(n) for n in names]


def _refuse_measurements(values: np.ndarray, where: str) -> None:
    """Numbers that are measurements, not class labels: fractions, or whole numbers with many
    distinct values seen a few times each and often once (scikit-learn's diabetes: 214 values
    over 442 samples, 84 of them seen once). Class labels, even stored as floats, repeat."""
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise UserError(f"{where}: labels must be finite (found NaN or Inf)")
    distinct, counts = np.unique(values, return_counts=True)
    fractional = np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values))
    if fractional or (len(counts) > 20 and counts.mean() < 5 and (counts == 1).mean() >= 0.1):
        raise UserError(
            f"{where}: {len(distinct)} distinct values ({int((counts == 1).sum())} seen once) "
            "look like a regression target; classification needs class labels (integers or "
            "names, each seen several times)"
        )
