"""CIFAR-10, binary version only: data_batch_*.bin and test_batch.bin (1 + 3072 bytes a row).

The "python version" of CIFAR-10 is a set of pickles; deepfleet never unpickles data, so it is
refused with a pointer to the binary version.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import numpy as np

from deepfleet.data._rows import ConcatRows, MappedArray, SpillFolder
from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

RECORD = 1 + 3 * 32 * 32
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BINARY_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
_TRAIN = re.compile(r"data_batch_\d+\.bin$")
_PICKLED = re.compile(r"(data_batch_\d+|test_batch|batches\.meta)$")
_MAX_MEMBER = 512 << 20  # a CIFAR-10 batch is 30 MB; refuse anything wildly larger


def _refuse_pickled(where: str) -> UserError:
    return UserError(
        f"{where}: this is the pickled 'python version' of CIFAR-10, which "
        f"deepfleet does not unpickle; use the binary version ({BINARY_URL}: "
        "data_batch_*.bin, test_batch.bin)"
    )


def _files_in_folder(folder: Path) -> dict[str, Path]:
    inner = folder / "cifar-10-batches-bin"
    if inner.is_dir():
        folder = inner
    names = {p.name: p for p in folder.iterdir() if p.is_file()}
    if not any(_TRAIN.match(n) for n in names) and any(_PICKLED.match(n) for n in names):
        raise _refuse_pickled(str(folder))
    return {
        n: p
        for n, p in names.items()
        if _TRAIN.match(n) or n in ("test_batch.bin", "batches.meta.txt")
    }


def _files_in_tar(path: Path, spill: SpillFolder) -> dict[str, Path]:
    """The archive's members streamed into temporary raw files (nothing is extracted under
    its own name, and no member is held in memory)."""
    out: dict[str, Path] = {}
    pickled = False
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                name = Path(member.name).name
                pickled |= bool(_PICKLED.match(name))
                if not member.isfile() or not (
                    _TRAIN.match(name) or name in ("test_batch.bin", "batches.meta.txt")
                ):
                    continue
                if member.size > _MAX_MEMBER:
                    raise UserError(f"{path}: member {member.name} is too large for CIFAR-10")
                out[name] = spill.spill(archive.extractfile(member))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(f"{path}: cannot read the archive ({err})") from None
    if pickled and not any(_TRAIN.match(n) for n in out):
        raise _refuse_pickled(str(path))
    return out


def is_cifar_source(path: Path) -> bool:
    if path.is_file():
        return "cifar" in path.name.lower() and path.name.endswith((".tar.gz", ".tgz", ".tar"))
    if not path.is_dir():
        return False
    folder = path / "cifar-10-batches-bin" if (path / "cifar-10-batches-bin").is_dir() else path
    return any(_TRAIN.match(p.name) or _PICKLED.match(p.name) for p in folder.iterdir())


def _batch(name: str, path: Path) -> tuple[MappedArray, np.ndarray]:
    """One batch file: its pixels read on demand, its label bytes read now (N bytes)."""
    size = path.stat().st_size
    if size % RECORD:
        raise UserError(
            f"{name}: {size} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each)"
        )
    n = size // RECORD
    labels = np.memmap(path, np.uint8, mode="r", shape=(n, RECORD))[:, 0].astype(np.int64)
    return MappedArray(path, "u1", (n, 3, 32, 32), record=RECORD, skip=1), labels


def load_cifar10(path: str | Path) -> Samples:
    """A folder (or the .tar.gz) of the binary version; test_batch.bin becomes the test split."""
    path = Path(path)
    spill = SpillFolder()
    files = _files_in_tar(path, spill) if path.is_file() else _files_in_folder(path)
    train_names = sorted(
        (n for n in files if _TRAIN.match(n)), key=lambda n: int(re.findall(r"\d+", n)[0])
    )
    if not train_names:
        raise UserError(f"{path}: no CIFAR-10 data_batch_*.bin files")
    parts = [_batch(n, files[n]) for n in train_names]
    train_rows = sum(len(p[1]) for p in parts)
    if "test_batch.bin" in files:
        parts.append(_batch("test_batch.bin", files["test_batch.bin"]))
    x = ConcatRows([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    names = CLASSES
    if "batches.meta.txt" in files:
        listed = [
            n.strip()
            for n in files["batches.meta.txt"].read_text("utf-8", "replace").splitlines()
            if n.strip()
        ]
        names = listed or CLASSES
    if y.max() >= len(names):
        raise UserError(f"{path}: label {int(y.max())} but only {len(names)} class names")
    return Samples(
        x=x,
        y=y,
        class_names=names,
        scale=1.0 / 255.0,
        description=f"CIFAR-10 binary ({path.name}): {train_rows} train + "
        f"{len(y) - train_rows} test RGB 32x32 images",
        test_rows=np.arange(train_rows, len(y)) if len(y) > train_rows else None,
        keep=spill,
    )
