"""The job's [data.augment] turned into what the streams and the bundle use: the training
and evaluation transforms of encoded images, and the per-channel normalisation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepfleet.data._augment import ImageTransform
from deepfleet.data._manifest import Manifest
from deepfleet.data._preprocess import Preprocessing

if TYPE_CHECKING:
    from deepfleet.config import AugmentSection


def train_transform(
    manifest: Manifest, augment: AugmentSection, seed: int
) -> ImageTransform | None:
    """Random-resized crop, flip and jitter for encoded images (None for other data)."""
    image = manifest.image
    if image is None:
        return None
    size = tuple(image["size"])
    if not augment.enabled:
        return ImageTransform(size=size, resize_ratio=image["resize_ratio"])
    return ImageTransform(
        size=size,
        train=True,
        scale=tuple(augment.crop_scale),
        ratio=tuple(augment.crop_ratio),
        flip=augment.flip,
        brightness=augment.brightness,
        contrast=augment.contrast,
        saturation=augment.saturation,
        resize_ratio=image["resize_ratio"],
        seed=seed,
    )


def normalization(augment: AugmentSection) -> tuple[list[float], list[float]] | None:
    if augment.mean is None or augment.std is None:
        return None
    return list(augment.mean), list(augment.std)


def model_preprocessing(manifest: Manifest, augment: AugmentSection) -> Preprocessing:
    """What the bundle records: the data's preprocessing (for encoded images, decoding and
    the evaluation crop) plus the job's normalisation."""
    return manifest.preprocessing.normalised(augment.mean, augment.std)
