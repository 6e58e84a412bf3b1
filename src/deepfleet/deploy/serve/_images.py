"""Encoded images as an input tensor: a BYTES tensor whose elements are the files' bytes
(JPEG, PNG, WebP, anything Pillow opens), for a bundle trained on encoded images.

The elements arrive in the three ways the Open Inference Protocol carries BYTES:
- JSON `data`: one base64 string per image (JSON strings cannot hold arbitrary bytes);
- the binary tensor data extension and gRPC's raw_input_contents: each element as a 4-byte
  little-endian length, then its bytes (Triton's layout, what tritonclient sends);
- gRPC's typed `contents.bytes_contents`: one bytes entry per image.

Each image is decoded and given the evaluation transform the bundle records (shorter side
resized, centre crop) by the same code evaluation and predict use (data._decode), so a file
gets the same answer from serve as from `deepfleet predict`. A file that is not an image, or
one of more pixels than Pillow's MAX_IMAGE_PIXELS (a decompression bomb), is a 400 naming the
input and the element; the body itself is bounded by the server's max body size.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any

import numpy as np

from deepfleet.data import Preprocessing
from deepfleet.data._decode import decode_named
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.errors import UserError

BYTES = "BYTES"
_LENGTH = struct.Struct("<I")


def image_count(shape: list[int], what: str) -> int:
    """The number of images a BYTES tensor of `shape` holds: [N] or [N, 1]."""
    if len(shape) not in (1, 2) or shape[0] < 1 or (len(shape) == 2 and shape[1] != 1):
        raise RequestError(
            400, f"{what}: shape {shape} of BYTES must be [N] or [N, 1] (one encoded image a row)"
        )
    return shape[0]


def split_elements(data: bytes | memoryview, what: str) -> list[bytes]:
    """Triton's serialised BYTES tensor (length-prefixed elements) -> the elements."""
    view, out, at = memoryview(data), [], 0
    while at < len(view):
        if at + 4 > len(view):
            raise RequestError(400, f"{what}: BYTES data ends inside an element's 4-byte length")
        (size,) = _LENGTH.unpack_from(view, at)
        at += 4
        if at + size > len(view):
            raise RequestError(
                400,
                f"{what}: BYTES element {len(out)} says {size} bytes but only "
                f"{len(view) - at} follow",
            )
        out.append(bytes(view[at : at + size]))
        at += size
    return out


def _element(value: Any, k: int, what: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(
                400, f"{what}: element {k} is not base64 (JSON carries each image base64-encoded)"
            ) from None
    raise RequestError(400, f"{what}: element {k} must be a base64 string of an image file")


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, np.ndarray):
        return list(data.ravel())
    flat: list[Any] = []
    for value in data:
        flat.extend(_flatten(value) if isinstance(value, list) else [value])
    return flat


def image_elements(data: Any, count: int, what: str) -> list[bytes]:
    """A BYTES tensor's data (raw serialised bytes, JSON base64 strings, gRPC bytes
    entries, or an object array) -> `count` encoded files."""
    if isinstance(data, bytes | bytearray | memoryview):
        blobs = split_elements(data, what)
    elif isinstance(data, list | np.ndarray):
        blobs = [_element(v, k, what) for k, v in enumerate(_flatten(data))]
    else:
        raise RequestError(400, f"{what}: BYTES data must be a list of base64 strings")
    if len(blobs) != count:
        raise RequestError(
            400, f"{what}: {len(blobs)} BYTES elements but the shape says {count} images"
        )
    return blobs


def decode_request_images(
    blobs: list[bytes], preprocessing: Preprocessing, what: str
) -> np.ndarray:
    """Encoded files -> uint8 N x C x H x W by the bundle's evaluation transform."""
    names = [f"{what}: element {k}" for k in range(len(blobs))]
    try:
        return decode_named(blobs, preprocessing.image or {}, names)
    except UserError as err:
        raise RequestError(400, str(err)) from None


def image_pixels(
    shape: list[int], data: Any, preprocessing: Preprocessing, what: str, max_rows: int
) -> np.ndarray:
    """A BYTES input tensor -> the decoded uint8 pixels of its images, checked (for a
    bundle trained on encoded images: its preprocessing records their transform)."""
    count = image_count(shape, what)
    if count > max_rows:
        raise RequestError(
            400, f"{what}: batch of {count} rows exceeds the server's max batch size {max_rows}"
        )
    return decode_request_images(image_elements(data, count, what), preprocessing, what)
