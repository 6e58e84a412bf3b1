"""Sources: a name or a path in [data].source (or `deepfleet prepare SOURCE`) becomes Samples.

SOURCE is a built-in name (digits), a path whose kind is recognised from its contents, or
KIND:PATH to name the kind explicitly (e.g. fashion-mnist:data/fmnist).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deepfleet.data._arrays import load_npy, load_npz
from deepfleet.data._cifar import is_cifar_source, load_cifar10
from deepfleet.data._digits import load_digits_samples
from deepfleet.data._idx import is_idx_folder, load_idx_folder
from deepfleet.data._images import is_image_folder, load_image_folder
from deepfleet.data._samples import Samples
from deepfleet.data._table import SUFFIXES as TABLE_SUFFIXES
from deepfleet.data._table import load_table
from deepfleet.errors import UserError

BUILTIN_SOURCES: dict[str, Callable[[], Samples]] = {
    "digits": load_digits_samples,
}


@dataclass(frozen=True)
class SourceOptions:
    """Settings only some kinds use."""

    label_column: str = "label"  # table
    image_size: list[int] | None = None  # image folder: [height, width]


_KINDS: dict[str, Callable[[Path, SourceOptions], Samples]] = {
    "mnist": lambda p, o: load_idx_folder(p, fashion=False),
    "fashion-mnist": lambda p, o: load_idx_folder(p, fashion=True),
    "idx": lambda p, o: load_idx_folder(p),
    "cifar10": lambda p, o: load_cifar10(p),
    "images": lambda p, o: load_image_folder(p, o.image_size),
    "npz": lambda p, o: load_npz(p),
    "npy": lambda p, o: load_npy(p),
    "table": lambda p, o: load_table(p, o.label_column),
}
SOURCE_KINDS = tuple(_KINDS)


def detect_kind(path: Path) -> str:
    """The kind of a source path, judged by its name (files) or its contents (folders)."""
    name = path.name.lower()
    if path.is_file():
        if name.endswith(".npz"):
            return "npz"
        if name.endswith(".npy"):
            return "npy"
        if name.endswith(TABLE_SUFFIXES):
            return "table"
        if is_cifar_source(path):
            return "cifar10"
        raise UserError(
            f"{path}: unknown kind of source file (expected .npz, .npy, .parquet, "
            ".csv or a CIFAR-10 archive)"
        )
    if is_idx_folder(path):
        return "idx"
    if is_cifar_source(path):
        return "cifar10"
    if (path / "x.npy").is_file():
        return "npy"
    if is_image_folder(path):
        return "images"
    raise UserError(
        f"{path}: no data recognised (IDX files, CIFAR-10 batches, x.npy/y.npy, or "
        "class subfolders of PNG/JPEG images)"
    )


def _split_kind(spec: str) -> tuple[str | None, str]:
    kind, sep, rest = spec.partition(":")
    if sep and kind in _KINDS:
        return kind, rest
    return None, spec


def load_source(spec: str, options: SourceOptions | None = None) -> Samples:
    """Load a built-in source by name, or a path (optionally KIND:PATH)."""
    if spec in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[spec]()
    kind, where = _split_kind(spec)
    path = Path(where).expanduser()
    if not path.exists():
        raise UserError(
            f"data.source: {spec!r} is neither a built-in source ({', '.join(BUILTIN_SOURCES)}) "
            f"nor an existing path (kinds: {', '.join(SOURCE_KINDS)})"
        )
    samples = _KINDS[kind or detect_kind(path)](path, options or SourceOptions())
    if len(samples.y) == 0:
        raise UserError(f"{spec}: the source holds no samples")
    return samples
