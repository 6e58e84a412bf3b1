"""NumPy arrays: an .npz with arrays x and y, or x.npy with y.npy beside it (no pickles)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from deepfleet.data._samples import Samples
from deepfleet.errors import UserError


def _load(path: Path):
    try:
        return np.load(path, allow_pickle=False)  # object arrays would need pickle: refused
    except ValueError as err:
        raise UserError(f"{path}: cannot load without unpickling ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a NumPy file ({err})") from None


def _samples(x: np.ndarray, labels: np.ndarray, where: str) -> Samples:
    if x.ndim < 2 or len(x) != len(labels):
        raise UserError(
            f"{where}: x has shape {list(x.shape)} and y {list(labels.shape)}; "
            "expected N x ... features and N targets"
        )
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise UserError(f"{where}: x must be numeric, got {x.dtype}")
    # uint8 is taken to be pixels (0..255); other dtypes are fed to the model as they are.
    scale = 1.0 / 255.0 if x.dtype == np.uint8 else 1.0
    if x.dtype not in (np.uint8, np.int8, np.int16, np.int32, np.float16, np.float32):
        x = x.astype(np.float32)
    return Samples(
        x=np.ascontiguousarray(x),
        y=labels,
        class_names=None,  # the task encodes y
        targets_from=where,
        scale=scale,
        description=f"NumPy arrays {where}: {len(labels)} samples of {list(x.shape[1:])}",
    )


def load_npz(path: str | Path) -> Samples:
    path = Path(path)
    archive = _load(path)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: not an .npz archive")
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise UserError(f"{path}: needs arrays x and y, has {', '.join(archive.files)}")
        try:  # members load lazily: an object array fails here, still without unpickling
            x, y = archive["x"], archive["y"]
        except ValueError as err:
            raise UserError(f"{path}: cannot load without unpickling ({err})") from None
        return _samples(x, y, path.name)


def load_npy(path: str | Path) -> Samples:
    """A folder with x.npy and y.npy, or the path of an x .npy with y.npy next to it."""
    path = Path(path)
    x_path = path / "x.npy" if path.is_dir() else path
    y_path = x_path.with_name("y.npy")
    for p in (x_path, y_path):
        if not p.is_file():
            raise UserError(f"{p}: not found (a .npy source needs x.npy and y.npy)")
    return _samples(_load(x_path), _load(y_path), str(x_path.parent.name or x_path.name))
