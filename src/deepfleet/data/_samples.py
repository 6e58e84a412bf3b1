"""The in-memory form every source produces before it is written to shards."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.ids is None:
            self.ids = np.arange(len(self.y), dtype=np.int64)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])
