"""Decoding encoded images (JPEG / PNG / WebP bytes from the shards) into fixed-size uint8
C x H x W arrays, with the sample's transform, in the loader's worker processes.

JPEG goes through libjpeg-turbo straight into a NumPy array (simplejpeg): the same pixels as
Pillow's decoder, without Pillow's header parsing in Python and its copy out of the image,
which were a third of the time per image. Anything else (PNG, WebP, and the rare CMYK JPEG
libjpeg-turbo cannot turn into RGB) goes through Pillow.

The crop is chosen on the image's full size first; a JPEG at least twice as large as the
crop's output is then decoded at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or 1/8),
which cuts the decoding work by up to 64x and gives the same region. The crop is resampled by
torch's uint8 bilinear kernel with antialiasing (the filter Pillow uses, vectorised).
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import simplejpeg
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from deepfleet.data._augment import Box, ImageTransform, jitter
from deepfleet.errors import UserError

if TYPE_CHECKING:
    from deepfleet.data._manifest import Manifest

_JPEG_MAGIC = b"\xff\xd8\xff"
# Pillow's plugins report malformed files as any of these, not only as OSError;
# simplejpeg reports them as ValueError.
_UNDECODABLE = (
    UnidentifiedImageError,
    OSError,
    Image.DecompressionBombError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
)


def decode_image(
    data: bytes,
    mode: str,
    transform: ImageTransform,
    rng: np.random.Generator | None = None,
    where: str = "image",
    max_pixels: int | None = None,
) -> np.ndarray:
    """One encoded image -> uint8 H x W x C (C = 1 for mode L) at transform.size.

    `max_pixels` refuses a larger image before any pixel is decoded (a server passes
    Pillow's MAX_IMAGE_PIXELS: Pillow itself only warns below twice that). Anything that is
    not a decodable image is a UserError naming `where`.
    """
    out_h, out_w = transform.size
    try:
        size = _jpeg_size(data)
        if size is None:
            pixels, box = _decode_other(data, mode, transform, rng, where, max_pixels)
        else:
            _check_pixels(size, max_pixels, where)
            box = transform.crop_box(size[0], size[1], rng)
            pixels = _decode_jpeg(data, mode, size, box, transform.size)
    except _UNDECODABLE as err:
        raise UserError(f"{where}: not a decodable image ({err})") from None
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    # The crop in the decoded image's pixels (a reduced-scale JPEG is smaller), whole pixels.
    height, width = size if size is not None else pixels.shape[:2]
    sx, sy = pixels.shape[1] / width, pixels.shape[0] / height
    left, top, right, bottom = box
    x0, y0 = int(round(left * sx)), int(round(top * sy))
    x1 = max(x0 + 1, min(pixels.shape[1], int(round(right * sx))))
    y1 = max(y0 + 1, min(pixels.shape[0], int(round(bottom * sy))))
    picture = _resize(pixels[y0:y1, x0:x1], out_h, out_w)
    if rng is not None and transform.train and rng.random() < transform.flip:
        picture = picture[:, ::-1]
    return jitter(picture, transform, rng) if rng is not None and transform.train else picture


def _check_pixels(size: tuple[int, int], max_pixels: int | None, where: str) -> None:
    height, width = size
    if max_pixels is not None and width * height > max_pixels:
        raise UserError(
            f"{where}: {width}x{height} pixels exceed the limit of {max_pixels} "
            "(a decompression bomb?)"
        )


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a JPEG libjpeg-turbo decodes to RGB or grey; None for anything
    else (Pillow's turn)."""
    if data[:3] != _JPEG_MAGIC:
        return None
    height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    return None if colorspace in ("CMYK", "YCCK") else (height, width)


def _decode_jpeg(
    data: bytes, mode: str, size: tuple[int, int], box: Box, out: tuple[int, int]
) -> np.ndarray:
    """The JPEG at the largest DCT scale (1, 1/2, 1/4, 1/8) that keeps the crop at least as
    large as the output (libjpeg's scales between 1/2 and 1 are slower than a full decode)."""
    left, top, right, bottom = box
    reduce = min((right - left) / out[1], (bottom - top) / out[0])
    scale = next((s for s in (8, 4, 2) if reduce >= s), 1)
    height, width = size
    return simplejpeg.decode_jpeg(
        data,
        "GRAY" if mode == "L" else "RGB",
        min_height=math.ceil(height / scale),
        min_width=math.ceil(width / scale),
        min_factor=scale,
    )


def _decode_other(
    data: bytes,
    mode: str,
    transform: ImageTransform,
    rng: np.random.Generator | None,
    where: str,
    max_pixels: int | None,
) -> tuple[np.ndarray, Box]:
    """PNG, WebP and the rest through Pillow, at full size: the pixels and the crop."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        _check_pixels((height, width), max_pixels, where)
        box = transform.crop_box(height, width, rng)
        return np.asarray(image if image.mode == mode else image.convert(mode)), box


def _resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """H x W x C uint8 to height x width, bilinear with antialiasing (Pillow's filter), by
    torch's vectorised uint8 kernel: 2-3x Pillow's resampling, which is most of the work."""
    if pixels.shape[:2] == (height, width):
        return pixels
    # A copy of the crop (the decoded image is read-only): torch takes writable arrays.
    crop = torch.from_numpy(np.array(pixels, order="C")).permute(2, 0, 1)[None]
    out = F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True)
    return out[0].permute(1, 2, 0).numpy()


class ImageDecoder:
    """A window's encoded images -> uint8 N x C x H x W, each with its own seeded draws."""

    def __init__(self, mode: str, transform: ImageTransform) -> None:
        self.mode, self.transform = mode, transform

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def empty(self, count: int) -> np.ndarray:
        """An uninitialised uint8 batch of `count` decoded images (N x C x H x W)."""
        return np.empty((count, self.channels, *self.transform.size), np.uint8)

    def decode(self, blobs: np.ndarray, ids: np.ndarray, epoch: int, out: np.ndarray) -> None:
        """Fill `out` (N x C x H x W uint8) from the N encoded images `blobs`."""
        t = self.transform
        for k, (data, sample) in enumerate(zip(blobs, ids, strict=True)):
            rng = t.rng(epoch, int(sample)) if t.train else None
            self.decode_into(out, k, data, f"sample {int(sample)}", rng)

    def decode_into(
        self,
        out: np.ndarray,
        k: int,
        data: bytes,
        where: str,
        rng: np.random.Generator | None = None,
        max_pixels: int | None = None,
    ) -> None:
        """out[k] from one encoded image (see decode_image for `where` and `max_pixels`)."""
        pixels = decode_image(data, self.mode, self.transform, rng, where, max_pixels)
        out[k] = pixels.transpose(2, 0, 1)


def decode_named(
    blobs: Sequence[bytes], image: dict, names: Sequence[str], threads: int = 1
) -> np.ndarray:
    """Encoded files from outside (a request, a folder) -> uint8 N x C x H x W by a bundle's
    recorded evaluation transform (`image`), in `threads` threads. A file that is no image,
    or one of more pixels than Pillow's MAX_IMAGE_PIXELS (a decompression bomb), is a
    UserError naming it (the first such file in order)."""
    if len(names) != len(blobs):
        raise ValueError(f"{len(blobs)} files but {len(names)} names")
    decoder = evaluation_decoder(image)
    out = decoder.empty(len(blobs))
    # Read at call time: an operator may set PIL.Image.MAX_IMAGE_PIXELS for the process.
    limit = Image.MAX_IMAGE_PIXELS

    def fill(k: int) -> None:
        decoder.decode_into(out, k, blobs[k], names[k], max_pixels=limit)

    if threads <= 1 or len(blobs) < 2:
        for k in range(len(blobs)):
            fill(k)
        return out
    # libjpeg-turbo, Pillow's decoders and torch's resampling release the GIL: 1.76x on 2
    # cores with 2 threads. map re-raises in order, so the error names the first bad file.
    with ThreadPoolExecutor(min(threads, len(blobs))) as pool:
        for _ in pool.map(fill, range(len(blobs))):
            pass
    return out


def evaluation_decoder(image: dict) -> ImageDecoder:
    """The decoder of the evaluation transform a manifest or a bundle records (`image`:
    mode, size [H, W], resize_ratio): resize the shorter side, take the centre crop."""
    size = (int(image["size"][0]), int(image["size"][1]))
    transform = ImageTransform(size=size, resize_ratio=float(image["resize_ratio"]))
    return ImageDecoder(str(image["mode"]), transform)


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
