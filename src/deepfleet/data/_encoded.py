"""Images kept encoded: each row holds the file's own JPEG / PNG / WebP bytes as they came,
with the image's height and width; the pixels are decoded while streaming (see _decode.py).

The stored column `x` is Arrow binary (variable length); `height` and `width` are int32
columns beside it, so a reader can plan crops without decoding. manifest.json records
`features.encoding = "image"`, the channels, and the size [H, W] the stream decodes to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from deepfleet.data._manifest import IMAGE
from deepfleet.errors import UserError

__all__ = ["IMAGE", "EncodedImages", "image_kind"]

_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}


def image_kind(data: bytes) -> str | None:
    """jpeg, png or webp from the first bytes, or None."""
    for magic, kind in _MAGIC.items():
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


class ImageList:
    """Rows that are image files, seen as uint8 N x C x H x W: `size` (H, W) and `mode` (L or
    RGB) are what they decode to. Pickles as its file list."""

    def __init__(self, paths: list[str], mode: str, size: tuple[int, int]) -> None:
        self.paths, self.mode, self.size = paths, mode, tuple(size)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), 1 if self.mode == "L" else 3, *self.size)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.paths)


class EncodedImages(ImageList):
    """The rows of an image folder as their files' bytes (`sizes`: each file's own H, W),
    decoded by the stream."""

    def __init__(
        self, paths: list[str], sizes: np.ndarray, mode: str, size: tuple[int, int]
    ) -> None:
        super().__init__(paths, mode, size)
        self.sizes = sizes

    @property
    def nbytes(self) -> int:
        """The bytes stored (the files' sizes): what decides whether a pool pays."""
        return sum(Path(p).stat().st_size for p in self.paths[:1000]) * max(
            1, len(self.paths) // 1000
        )

    def select(self, rows: np.ndarray) -> EncodedImages:
        return EncodedImages([self.paths[r] for r in rows], self.sizes[rows], self.mode, self.size)

    def arrow_columns(self, rows: np.ndarray) -> list[tuple[pa.Field, pa.Array]]:
        """x (the encoded bytes), height and width of these rows."""
        blobs = []
        for r in rows:
            path = self.paths[r]
            try:
                data = Path(path).read_bytes()
            except OSError as err:
                raise UserError(f"{path}: cannot be read ({err.strerror})") from None
            if image_kind(data) is None:
                raise UserError(f"{path}: not a JPEG, PNG or WebP file")
            blobs.append(data)
        sizes = self.sizes[rows]
        return [
            (pa.field("x", pa.binary(), nullable=False), pa.array(blobs, pa.binary())),
            (pa.field("height", pa.int32(), nullable=False), pa.array(sizes[:, 0], pa.int32())),
            (pa.field("width", pa.int32(), nullable=False), pa.array(sizes[:, 1], pa.int32())),
        ]
