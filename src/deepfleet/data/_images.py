"""An image folder: one subfolder per class holding PNG, JPEG or WebP files (Pillow).

Only the headers are read up front (mode and size, to check the set); the pixels are read by
the shard writer's workers, a row group at a time, from the file list they are given. Images
are stored either decoded at one fixed size (`ImageFiles`, for small images) or as the file's
own encoded bytes with its height and width (`EncodedImages`, see _encoded.py), decoded while
streaming.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepfleet.data._encoded import EncodedImages, ImageList
from deepfleet.data._rows import index_rows
from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
_GREY = ("L", "1", "I;16", "I")
SMALL = 64 * 64  # "auto" keeps images up to this many pixels decoded


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())


def is_image_folder(folder: Path) -> bool:
    return folder.is_dir() and any(_images(c) for c in _class_folders(folder))


def load_pixels(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as H x W (grey) or H x W x 3 uint8, resized to `size` = (H, W) if given."""
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: not a readable image ({err})") from None


def _headers(paths: list[Path]) -> tuple[bool, np.ndarray]:
    """(any colour image, N x 2 heights and widths), from the headers alone."""
    colour, sizes = False, np.zeros((len(paths), 2), np.int32)
    for k, path in enumerate(paths):
        try:
            with Image.open(path) as image:  # lazy: reads the header, not the pixels
                colour |= image.mode not in _GREY
                sizes[k] = image.size[1], image.size[0]
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"{path}: not a readable image ({err})") from None
    return colour, sizes


class ImageFiles(ImageList):
    """Images decoded to uint8 N x C x H x W on demand, from their files."""

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key) -> np.ndarray:
        return index_rows(self, key)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self[:], dtype=dtype)

    def select(self, rows: np.ndarray) -> ImageFiles:
        """Only these rows: what a worker is sent is its own file list."""
        return ImageFiles([self.paths[r] for r in rows], self.mode, self.size)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), np.uint8)
        for k, r in enumerate(rows):
            pixels = load_pixels(Path(self.paths[r]), self.mode, self.size)
            out[k] = pixels[None] if self.mode == "L" else pixels.transpose(2, 0, 1)
        return out


def load_image_folder(
    folder: str | Path, image_size: list[int] | None = None, image_format: str = "auto"
) -> Samples:
    """Every image of every class subfolder (classes sorted by name), read when written.

    `image_format`: "decoded" stores uint8 C x H x W pixels (images must share one size
    unless `image_size` = [height, width] resizes them); "encoded" stores the files' own
    bytes, any size, decoded while streaming to `image_size` (default 224 x 224); "auto"
    is decoded when every image has at most 64 x 64 pixels, else encoded.
    """
    folder = Path(folder)
    classes = [c for c in _class_folders(folder) if _images(c)]
    if not classes:
        raise UserError(f"{folder}: no class subfolders with PNG, JPEG or WebP images")
    files = [(k, p) for k, c in enumerate(classes) for p in _images(c)]
    paths = [p for _, p in files]
    colour, sizes = _headers(paths)
    mode = "RGB" if colour else "L"
    if image_format == "auto":
        image_format = "decoded" if int(sizes.prod(axis=1).max()) <= SMALL else "encoded"
    size = (int(image_size[0]), int(image_size[1])) if image_size else None
    if image_format == "encoded":
        x = EncodedImages([str(p) for p in paths], sizes, mode, size or (224, 224))
    else:
        if size is None:
            odd = np.flatnonzero((sizes != sizes[0]).any(axis=1))
            if len(odd):
                (h, w), (h0, w0) = sizes[odd[0]], sizes[0]
                raise UserError(
                    f"{paths[odd[0]]}: size {w}x{h} differs from {w0}x{h0}; set "
                    "data.image_size (--image-size H W) to resize"
                )
            size = (int(sizes[0, 0]), int(sizes[0, 1]))
        x = ImageFiles([str(p) for p in paths], mode, size)
    return Samples(
        x=x,
        y=np.array([k for k, _ in files]),
        class_names=[c.name for c in classes],
        scale=1.0 / 255.0,
        description=f"image folder {folder.name}: {len(files)} images in {len(classes)} "
        f"classes, stored {image_format}",
    )
