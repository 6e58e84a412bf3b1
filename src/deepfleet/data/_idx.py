"""MNIST and Fashion-MNIST: IDX files (LeCun's format), gzipped or raw."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from deepfleet.data._rows import ConcatRows, MappedArray, SpillFolder
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


def _open(path: Path, spill: SpillFolder | None) -> tuple[Path, bytes]:
    """The file to map (gzip is first streamed into a raw temporary copy) and its first
    bytes (the header)."""
    with path.open("rb") as handle:
        gz = handle.read(2) == b"\x1f\x8b"  # gzip magic, whatever the file is called
    if gz:
        spill = spill or SpillFolder()
        try:
            with gzip.open(path, "rb") as stream:
                path = spill.spill(stream)
        except (OSError, EOFError, zlib.error) as err:
            raise UserError(f"{path}: damaged gzip file ({err})") from None
    with path.open("rb") as handle:
        return path, handle.read(4 + 4 * 255)


def map_idx(path: str | Path, spill: SpillFolder | None = None) -> MappedArray:
    """One IDX file as rows read on demand (native byte order), its header checked."""
    path = Path(path)
    raw, head = _open(path, spill)
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    ndim = head[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(head) < header:
        raise UserError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(head, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[head[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    found = raw.stat().st_size - header
    if found != expected:
        raise UserError(
            f"{path}: IDX header promises {expected} bytes of data for shape "
            f"{list(shape)}, found {found}"
        )
    return MappedArray(raw, dtype.str, shape, offset=header)


def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file as an array of its own dtype and shape (native byte order)."""
    spill = SpillFolder()
    try:
        rows = map_idx(path, spill)
        return rows[np.arange(len(rows))] if len(rows) else np.zeros(rows.shape, rows.dtype)
    finally:
        spill.cleanup()


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


def _pair(folder: Path, prefix: str, spill: SpillFolder) -> tuple[MappedArray, np.ndarray] | None:
    images = _find(folder, f"{prefix}-images", "images")
    labels = _find(folder, f"{prefix}-labels", "labels")
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        have, missing = ("labels", "images") if images is None else ("images", "labels")
        raise UserError(f"{folder}: found {prefix}-{have} but no {prefix}-{missing} IDX file")
    x, y = map_idx(images, spill), read_idx(labels)  # labels are small: read them whole
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise UserError(
            f"{folder}: {images.name} has shape {list(x.shape)} and {labels.name} "
            f"{list(y.shape)}; expected N x H x W images and N labels"
        )
    if x.dtype != np.uint8:
        raise UserError(f"{folder}: {images.name} holds {x.dtype}, not unsigned bytes")
    # N x H x W bytes read as N x 1 x H x W: one grey channel.
    n, h, w = x.shape
    return MappedArray(x.path, "u1", (n, 1, h, w), offset=x.offset), y


def load_idx_folder(folder: str | Path, fashion: bool | None = None) -> Samples:
    """train-* (required) and t10k-* (optional: becomes the test split) IDX pairs, read on
    demand: gzipped files are unpacked to a temporary raw copy, never into memory."""
    folder = Path(folder)
    spill = SpillFolder()
    train = _pair(folder, "train", spill)
    if train is None:
        raise UserError(f"{folder}: no train-images / train-labels IDX files")
    test = _pair(folder, "t10k", spill)
    parts = [train] + ([test] if test else [])
    x = ConcatRows([p[0] for p in parts]) if test else train[0]
    y = np.concatenate([p[1] for p in parts]).astype(np.int64)
    if fashion is None:  # the files are named alike; the folder (or raw/'s parent) tells them apart
        named = folder.resolve()
        named = named.parent if named.name.lower() == "raw" else named
        fashion = "fashion" in named.name.lower()
    names = FASHION_CLASSES if fashion else [str(i) for i in range(10)]
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise UserError(f"{folder}: labels must be 0..{len(names) - 1}, found {y.min()}..{y.max()}")
    kind = "Fashion-MNIST" if fashion else "MNIST"
    h, w = train[0].shape[2:]
    return Samples(
        x=x,
        y=y,
        class_names=list(names),
        scale=1.0 / 255.0,
        description=f"{kind} IDX files in {folder.name}: {len(train[1])} train"
        + (f" + {len(test[1])} test" if test else "")
        + f" grey {h}x{w} images",
        test_rows=np.arange(len(train[1]), len(y)) if test else None,
        keep=spill,
    )
