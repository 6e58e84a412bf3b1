"""NumPy arrays: an .npz with arrays x and y, or x.npy with y.npy beside it (no pickles).

x is memory-mapped and read a shard's rows at a time (an .npz member is first streamed into a
raw temporary .npy, since zip members cannot be mapped); y is read whole (one value a row).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from deepfleet.data._rows import MappedArray, SpillFolder
from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

# Dtypes stored as they are; any other numeric dtype is stored as float32.
_KEPT = (np.uint8, np.int8, np.int16, np.int32, np.float16, np.float32)


def _load(path: Path, where: Path, mmap: bool = False):
    try:  # object arrays would need pickle: refused (and cannot be mapped)
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except ValueError as err:
        raise UserError(f"{where}: cannot load without unpickling ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{where}: not a NumPy file ({err})") from None


def _mapped(x: np.ndarray, path: Path, where: str) -> MappedArray | np.ndarray:
    if x.ndim < 2:
        return x  # reported by _samples
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{where}: x must be numeric, got {x.dtype}")
    cast = None if x.dtype in _KEPT else "float32"
    if isinstance(x, np.memmap) and x.flags.c_contiguous:
        return MappedArray(path, x.dtype.str, x.shape, offset=x.offset, cast=cast)
    return np.ascontiguousarray(x, dtype=cast)  # Fortran order: read whole, as before


def _samples(x, labels: np.ndarray, where: str, keep=None) -> Samples:
    if x.ndim < 2 or len(x) != len(labels):
        raise UserError(
            f"{where}: x has shape {list(x.shape)} and y {list(labels.shape)}; "
            "expected N x ... features and N targets"
        )
    # uint8 is taken to be pixels (0..255); other dtypes are fed to the model as they are.
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    return Samples(
        x=x,
        y=np.asarray(labels),
        class_names=None,  # the task encodes y
        targets_from=where,
        scale=scale,
        description=f"NumPy arrays {where}: {len(labels)} samples of {list(x.shape[1:])}",
        keep=keep,
    )


def load_npz(path: str | Path) -> Samples:
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not an .npz archive ({err})") from None
    spill = SpillFolder()
    with archive:
        members = {Path(n).stem: n for n in archive.namelist() if n.endswith(".npy")}
        missing = [k for k in ("x", "y") if k not in members]
        if missing:
            raise UserError(f"{path}: needs arrays x and y, has {', '.join(members)}")
        copies = {}
        for name in ("x", "y"):
            with archive.open(members[name]) as stream:
                copies[name] = spill.spill(stream)
    x = _mapped(_load(copies["x"], path, mmap=True), copies["x"], path.name)
    return _samples(x, _load(copies["y"], path), path.name, keep=spill)


def load_npy(path: str | Path) -> Samples:
    """A folder with x.npy and y.npy, or the path of an x .npy with y.npy next to it."""
    path = Path(path)
    x_path = path / "x.npy" if path.is_dir() else path
    y_path = x_path.with_name("y.npy")
    for p in (x_path, y_path):
        if not p.is_file():
            raise UserError(f"{p}: not found (a .npy source needs x.npy and y.npy)")
    where = str(x_path.parent.name or x_path.name)
    x = _mapped(_load(x_path, x_path, mmap=True), x_path, where)
    return _samples(x, _load(y_path, y_path), where)
