"""The input preprocessing: how samples as a source stores them (raw) become model input.

Shards keep the source's own dtype (digits: uint8 0..16, MNIST: uint8 0..255) and the model
sees float32(raw) x scale. The manifest records it, the bundle copies it, and evaluate,
predict and serve all apply this one function, so the same raw sample gets the same answer
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def scale_features(x: np.ndarray, scale: float) -> np.ndarray:
    """Stored features to model input: float32, times the scale."""
    x = x.astype(np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    return x


def _layout(shape: tuple[int, ...]) -> str:
    return {1: "features", 2: "HW", 3: "CHW"}.get(len(shape), "as stored")


TOKENS = "tokens"  # the layout of token ids: model input is int64(raw), no scale


@dataclass(frozen=True)
class Preprocessing:
    """model input = float32(raw) x scale, for raw samples of `raw_dtype` and `shape`; or,
    for token ids (layout "tokens"), int64(raw)."""

    raw_dtype: str = "float32"
    scale: float = 1.0
    layout: str = "as stored"

    @classmethod
    def for_samples(
        cls, raw_dtype: str, scale: float, shape: tuple[int, ...], *, tokens: bool = False
    ) -> Preprocessing:
        return cls(str(raw_dtype), float(scale), TOKENS if tokens else _layout(tuple(shape)))

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Preprocessing:
        """A bundle's record; bundles written before it existed took float32 as is."""
        if not data:
            return cls()
        return cls(str(data["raw_dtype"]), float(data["scale"]), str(data.get("layout", "")))

    @property
    def tokens(self) -> bool:
        return self.layout == TOKENS

    @property
    def input_dtype(self) -> str:
        """The dtype the model takes."""
        return "int64" if self.tokens else "float32"

    def to_json(self) -> dict[str, Any]:
        return {
            "raw_dtype": self.raw_dtype,
            "scale": self.scale,
            "layout": self.layout,
            "formula": "input = int64(raw)" if self.tokens else "input = float32(raw) * scale",
        }

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.tokens:
            return np.asarray(raw).astype(np.int64)
        return scale_features(raw, self.scale)

    def raw_problem(self, raw: np.ndarray) -> str | None:
        """Why `raw` cannot be raw samples of this data (values an integer dtype cannot hold,
        e.g. already scaled pixels), or None."""
        dtype = np.dtype(self.raw_dtype)
        if not np.issubdtype(dtype, np.integer):
            return None
        info = np.iinfo(dtype)
        with np.errstate(invalid="ignore"):
            whole = bool(np.all(raw == np.round(raw)))
        if not whole or raw.min() < info.min or raw.max() > info.max:
            return (
                f"values must be raw {self.raw_dtype} samples, whole numbers in "
                f"{info.min}..{info.max} (the model input is float32(raw) x "
                f"{self.scale:g}; send the data unscaled)"
            )
        return None
