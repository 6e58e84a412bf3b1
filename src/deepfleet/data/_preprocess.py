"""The input preprocessing: how samples as a source stores them (raw) become model input.

Shards keep the source's own dtype (digits: uint8 0..16, MNIST: uint8 0..255) and the model
sees float32(raw) x scale. The manifest records it, the bundle copies it, and evaluate,
predict and serve all apply this one function, so the same raw sample gets the same answer
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
    for token ids (layout "tokens"), int64(raw).

    Encoded images (`image` set: mode, size [H, W], resize_ratio) are raw bytes: decoded,
    the shorter side resized to size x resize_ratio and the centre cropped to size (the
    evaluation transform), then scaled. With `mean` and `std` (per channel) the scaled values
    are normalised: (float32(raw) x scale - mean) / std.
    """

    raw_dtype: str = "float32"
    scale: float = 1.0
    layout: str = "as stored"
    image: dict[str, Any] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def for_samples(
        cls,
        raw_dtype: str,
        scale: float,
        shape: tuple[int, ...],
        *,
        tokens: bool = False,
        image: dict[str, Any] | None = None,
    ) -> Preprocessing:
        layout = TOKENS if tokens else ("encoded image" if image else _layout(tuple(shape)))
        return cls(str(raw_dtype), float(scale), layout, image)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Preprocessing:
        """A bundle's record; bundles written before it existed took float32 as is."""
        if not data:
            return cls()
        mean, std = data.get("mean"), data.get("std")
        return cls(
            str(data["raw_dtype"]),
            float(data["scale"]),
            str(data.get("layout", "")),
            data.get("image"),
            tuple(mean) if mean else None,
            tuple(std) if std else None,
        )

    def normalised(self, mean: list[float] | None, std: list[float] | None) -> Preprocessing:
        """The same, with per-channel normalisation after the scale (None: none)."""
        if mean is None or std is None:
            return self
        return replace(self, mean=tuple(map(float, mean)), std=tuple(map(float, std)))

    @property
    def tokens(self) -> bool:
        return self.layout == TOKENS

    @property
    def input_dtype(self) -> str:
        """The dtype the model takes."""
        return "int64" if self.tokens else "float32"

    def to_json(self) -> dict[str, Any]:
        formula = "input = int64(raw)" if self.tokens else "input = float32(raw) * scale"
        if self.image:
            formula = "raw = centre crop of the decoded image; " + formula
        if self.mean is not None:
            formula = f"{formula}; input = (input - mean) / std per channel"
        extra = {"image": self.image} if self.image else {}
        if self.mean is not None:
            extra |= {"mean": list(self.mean), "std": list(self.std or ())}
        return {
            "raw_dtype": self.raw_dtype,
            "scale": self.scale,
            "layout": self.layout,
            **extra,
            "formula": formula,
        }

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.tokens:
            return np.asarray(raw).astype(np.int64)
        if self.image and np.asarray(raw).dtype == object:
            # Encoded images (bytes). Pixels already decoded to [C, H, W] (e.g. a served
            # request) pass on to the scale as they are.
            raw = self.decode_images(raw)
        return self.normalise(scale_features(raw, self.scale))

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """(x - mean) / std over the channel axis (axis 1 of N x C x ...), in place."""
        if self.mean is None or self.std is None:
            return x
        shape = (1, len(self.mean)) + (1,) * (x.ndim - 2)
        x -= np.asarray(self.mean, np.float32).reshape(shape)
        x /= np.asarray(self.std, np.float32).reshape(shape)
        return x

    def decode_images(self, blobs) -> np.ndarray:
        """Encoded images (bytes) -> uint8 N x C x H x W by the evaluation transform."""
        from deepfleet.data._decode import evaluation_decoder

        decoder = evaluation_decoder(self.image or {})
        out = decoder.empty(len(blobs))
        decoder.decode(np.asarray(blobs, dtype=object), np.arange(len(blobs)), 0, out)
        return out

    def raw_problem(self, raw: np.ndarray) -> str | None:
        """Why `raw` cannot be raw samples of this data (values an integer dtype cannot hold,
        e.g. already scaled pixels), or None."""
        dtype = np.dtype(self.raw_dtype)
        if self.image or not np.issubdtype(dtype, np.integer):
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
