"""MNIST and Fashion-MNIST: IDX files (LeCun's format), gzipped or raw."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

# IDX type byte -> big-endian NumPy dtype.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(f"{path}: damaged gzip file ({err})") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file as an array of its own dtype and shape (native byte order)."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise UserError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise UserError(
            f"{path}: IDX header promises {expected} bytes of data for shape "
            f"{list(shape)}, found {len(data) - header}"
        )
    array = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(folder: Path, prefix: str, kind: str) -> Path | None:
    """train-images-idx3-ubyte, train-images.idx3-ubyte, ....gz: the first that exists."""
    found = sorted(
        p
        for p in folder.iterdir()
        if p.name.startswith(prefix) and f"idx{3 if kind == 'images' else 1}" in p.name
    )
    return found[0] if found else None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and _find(folder, "train-images", "images") is not None


def _pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    images = _find(folder, f"{prefix}-images", "images")
    labels = _find(folder, f"{prefix}-labels", "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        have, missing = ("labels", "images") if images is None else ("images", "labels")
        raise UserError(f"{folder}: found {prefix}-{have} but no {prefix}-{missing} IDX file")
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise UserError(
            f"{folder}: {images.name} has shape {list(x.shape)} and {labels.name} "
            f"{list(y.shape)}; expected N x H x W images and N labels"
        )
    return x, y


def load_idx_folder(folder: str | Path, fashion: bool | None = None) -> Samples:
    """train-* (required) and t10k-* (optional: becomes the test split) IDX pairs."""
    folder = Path(folder)
    train = _pair(folder, "train")
    if train is None:
        raise UserError(f"{folder}: no train-images / train-labels IDX files")
    test = _pair(folder, "t10k")
    parts = [train] + ([test] if test else [])
    x = np.concatenate([p[0] for p in parts])[:, None].astype(np.uint8, copy=False)
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if fashion is None:  # the files are named alike; the folder (or raw/'s parent) tells them apart
        named = folder.resolve()
        named = named.parent if named.name.lower() == "raw" else named
        fashion = "fashion" in named.name.lower()
    names = FASHION_CLASSES if fashion else [str(i) for i in range(10)]
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise UserError(f"{folder}: labels must be 0..{len(names) - 1}, found {y.min()}..{y.max()}")
    kind = "Fashion-MNIST" if fashion else "MNIST"
    return Samples(
        x=x,
        y=y,
        class_names=list(names),
        scale=1.0 / 255.0,
        description=f"{kind} IDX files in {folder.name}: {len(train[1])} train"
        + (f" + {len(test[1])} test" if test else "")
        + " grey 28x28 images",
        test_rows=np.arange(len(train[1]), len(y)) if test else None,
    )
