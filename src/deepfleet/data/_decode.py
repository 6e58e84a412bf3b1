"""Decoding encoded images (JPEG / PNG / WebP bytes from the shards) into fixed-size uint8
C x H x W arrays, with the sample's transform, in the loader's worker processes (Pillow).

The crop is chosen on the image's full size first; a JPEG much larger than the crop's output
is then decoded at a reduced scale (libjpeg's DCT scaling, Pillow's `draft`), which cuts the
decoding work by up to 64x and gives the same region.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepfleet.data._augment import ImageTransform, jitter
from deepfleet.errors import UserError

if TYPE_CHECKING:
    from deepfleet.data._manifest import Manifest


def decode_image(
    data: bytes,
    mode: str,
    transform: ImageTransform,
    rng: np.random.Generator | None = None,
    where: str = "image",
) -> np.ndarray:
    """One encoded image -> uint8 H x W x C (C = 1 for mode L) at transform.size."""
    out_h, out_w = transform.size
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            left, top, right, bottom = transform.crop_box(height, width, rng)
            reduce = min((right - left) / out_w, (bottom - top) / out_h)
            if image.format == "JPEG" and reduce >= 2:
                image.draft(mode, (math.ceil(width / reduce), math.ceil(height / reduce)))
            sx, sy = image.size[0] / width, image.size[1] / height
            box = (left * sx, top * sy, right * sx, bottom * sy)
            # Resize first when the mode already fits: no conversion copy of the whole image.
            source = image if image.mode == mode else image.convert(mode)
            picture = source.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UserError(f"{where}: not a decodable image ({err})") from None
    if rng is not None and transform.train and rng.random() < transform.flip:
        picture = picture.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(picture, dtype=np.uint8)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return jitter(pixels, transform, rng) if rng is not None and transform.train else pixels


class ImageDecoder:
    """A window's encoded images -> uint8 N x C x H x W, each with its own seeded draws."""

    def __init__(self, mode: str, transform: ImageTransform) -> None:
        self.mode, self.transform = mode, transform

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def decode(self, blobs: np.ndarray, ids: np.ndarray, epoch: int, out: np.ndarray) -> None:
        """Fill `out` (N x C x H x W uint8) from the N encoded images `blobs`."""
        t = self.transform
        for k, (data, sample) in enumerate(zip(blobs, ids, strict=True)):
            rng = t.rng(epoch, int(sample)) if t.train else None
            pixels = decode_image(data, self.mode, t, rng, where=f"sample {int(sample)}")
            out[k] = pixels.transpose(2, 0, 1)


def image_decoder(manifest: Manifest, transform: ImageTransform | None) -> ImageDecoder | None:
    """The decoder of a data set of encoded images (None for plain tensors); `transform`
    defaults to evaluation's resize + centre crop to the manifest's size."""
    image = manifest.image
    if image is None:
        return None
    size = tuple(image["size"])
    transform = transform or ImageTransform(size=size, resize_ratio=image["resize_ratio"])
    if tuple(transform.size) != size:
        raise UserError(f"the image transform makes {list(transform.size)}, the data {list(size)}")
    return ImageDecoder(image["mode"], transform)
