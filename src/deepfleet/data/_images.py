"""An image folder: one subfolder per class holding PNG or JPEG files (read with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

SUFFIXES = (".png", ".jpg", ".jpeg")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())


def is_image_folder(folder: Path) -> bool:
    return folder.is_dir() and any(_images(c) for c in _class_folders(folder))


def _load(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: not a readable image ({err})") from None


def _mode(paths: list[Path]) -> str:
    """L when every image is grey, else RGB (grey images are then repeated over 3 channels)."""
    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "1", "I;16", "I"):
                    return "RGB"
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"{path}: not a readable image ({err})") from None
    return "L"


def load_image_folder(folder: str | Path, image_size: list[int] | None = None) -> Samples:
    """Every image of every class subfolder, as uint8 N x C x H x W (classes sorted by name).

    Images must share one size unless `image_size` ([height, width]) asks to resize them.
    """
    folder = Path(folder)
    classes = [c for c in _class_folders(folder) if _images(c)]
    if not classes:
        raise UserError(f"{folder}: no class subfolders with PNG or JPEG images")
    files = [(k, p) for k, c in enumerate(classes) for p in _images(c)]
    size = (int(image_size[0]), int(image_size[1])) if image_size else None
    mode = _mode([p for _, p in files])
    arrays = []
    for _, path in files:
        array = _load(path, mode, size)
        if arrays and array.shape != arrays[0].shape:
            raise UserError(
                f"{path}: size {array.shape[1]}x{array.shape[0]} differs from "
                f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; set data.image_size "
                "(--image-size H W) to resize"
            )
        arrays.append(array)
    x = np.stack(arrays)
    x = x[:, None] if mode == "L" else x.transpose(0, 3, 1, 2)
    return Samples(
        x=np.ascontiguousarray(x),
        y=np.array([k for k, _ in files]),
        class_names=[c.name for c in classes],
        scale=1.0 / 255.0,
        description=f"image folder {folder.name}: {len(files)} images in {len(classes)} classes",
    )
