"""Image transforms applied while streaming encoded images, seeded per sample.

Training draws a random-resized crop, a horizontal flip and a colour jitter; evaluation
resizes the shorter side and takes the centre crop. Every random draw comes from a
generator seeded by (seed, epoch, sample id), so a sample gets the same augmentation in the
same epoch whichever rank, worker or window reads it, and a resumed epoch sees the same
augmented batches. Normalisation (mean, std per channel) is applied with the float scaling
in the loader and recorded in the preprocessing (see _preprocess.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[int, int, int, int]  # left, top, right, bottom in the source image's pixels


@dataclass(frozen=True)
class ImageTransform:
    """What the stream makes of one encoded image: output size (H, W) and, for training,
    the random draws' ranges (train=False: resize + centre crop, no randomness)."""

    size: tuple[int, int] = (224, 224)
    train: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    resize_ratio: float = 256 / 224  # eval: shorter side resized to size x this, then cropped
    seed: int = 0

    def rng(self, epoch: int, sample_id: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, int(sample_id) & (2**63 - 1)])

    def crop_box(self, height: int, width: int, rng: np.random.Generator | None) -> Box:
        """The source region that becomes the output image."""
        if not self.train or rng is None:
            return self._centre_box(height, width)
        return _random_resized_box(height, width, self.scale, self.ratio, rng)

    def _centre_box(self, height: int, width: int) -> Box:
        """The region that resize(shorter side to size x resize_ratio) + centre crop keeps."""
        out_h, out_w = self.size
        factor = min(height, width) / (min(out_h, out_w) * self.resize_ratio)
        crop_h, crop_w = min(height, round(out_h * factor)), min(width, round(out_w * factor))
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        return left, top, left + crop_w, top + crop_h


def _random_resized_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> Box:
    """torchvision's RandomResizedCrop.get_params: ten tries at an area share and aspect
    ratio drawn log-uniformly, then the whole image clipped to the ratio range."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def jitter(pixels: np.ndarray, t: ImageTransform, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation factors drawn in [1 - j, 1 + j] (as torchvision's
    ColorJitter, in that fixed order), on H x W x C uint8; returns uint8."""
    if not (t.brightness or t.contrast or t.saturation):
        return pixels
    x = pixels.astype(np.float32)
    if t.brightness:
        x *= rng.uniform(1 - t.brightness, 1 + t.brightness)
    if t.contrast:
        grey = _grey(x).mean()
        x = (x - grey) * rng.uniform(1 - t.contrast, 1 + t.contrast) + grey
    if t.saturation and x.shape[-1] == 3:
        grey = _grey(x)[..., None]
        x = (x - grey) * rng.uniform(1 - t.saturation, 1 + t.saturation) + grey
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _grey(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] != 3:
        return x[..., 0]
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
