"""Sources: a name or a path in [data].source (or `deepfleet prepare SOURCE`) becomes Samples.

SOURCE is a built-in name (digits), a path whose kind is recognised from its contents, or
KIND:PATH to name the kind explicitly (e.g. fashion-mnist:data/fmnist).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from deepfleet.data._arrays import load_npy, load_npz
from deepfleet.data._cifar import is_cifar_source, load_cifar10
from deepfleet.data._digits import load_diabetes_samples, load_digits_samples
from deepfleet.data._idx import is_idx_folder, load_idx_folder
from deepfleet.data._images import is_image_folder, load_image_folder
from deepfleet.data._samples import Samples
from deepfleet.data._table import SUFFIXES as TABLE_SUFFIXES
from deepfleet.data._table import load_table
from deepfleet.data._text import TextOptions, load_stdlib_text, load_text
from deepfleet.errors import UserError
from deepfleet.tasks import ClassificationTask, Task


@dataclass(frozen=True)
class SourceOptions:
    """Settings only some kinds use, and the task that encodes the targets."""

    label_column: str = "label"  # table
    image_size: list[int] | None = None  # image folder: [height, width]
    image_format: str = "auto"  # image folder: decoded, encoded, or auto (by image size)
    text: TextOptions = field(default_factory=TextOptions)  # text: tokenizer and packing
    task: Task = field(default_factory=ClassificationTask)


BUILTIN_SOURCES: dict[str, Callable[[SourceOptions], Samples]] = {
    "digits": lambda o: load_digits_samples(),
    "diabetes": lambda o: load_diabetes_samples(),
    "python-stdlib": lambda o: load_stdlib_text(o.text),
}


_KINDS: dict[str, Callable[[Path, SourceOptions], Samples]] = {
    "mnist": lambda p, o: load_idx_folder(p, fashion=False),
    "fashion-mnist": lambda p, o: load_idx_folder(p, fashion=True),
    "idx": lambda p, o: load_idx_folder(p),
    "cifar10": lambda p, o: load_cifar10(p),
    "images": lambda p, o: load_image_folder(p, o.image_size, o.image_format),
    "npz": lambda p, o: load_npz(p),
    "npy": lambda p, o: load_npy(p),
    "table": lambda p, o: load_table(p, o.label_column),
    "text": lambda p, o: load_text(p, o.text),
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
        "class subfolders of PNG/JPEG/WebP images)"
    )


def _split_kind(spec: str) -> tuple[str | None, str]:
    kind, sep, rest = spec.partition(":")
    if sep and kind in _KINDS:
        return kind, rest
    return None, spec


def load_source(spec: str, options: SourceOptions | None = None) -> Samples:
    """Load a built-in source by name, or a path (optionally KIND:PATH); the task encodes
    and checks its targets."""
    options = options or SourceOptions()
    if spec in BUILTIN_SOURCES:
        return encode_targets(BUILTIN_SOURCES[spec](options), options.task, spec)
    kind, where = _split_kind(spec)
    path = Path(where).expanduser()
    if not path.exists():
        raise UserError(
            f"data.source: {spec!r} is neither a built-in source ({', '.join(BUILTIN_SOURCES)}) "
            f"nor an existing path (kinds: {', '.join(SOURCE_KINDS)})"
        )
    samples = _KINDS[kind or detect_kind(path)](path, options)
    if len(samples.y) == 0:
        raise UserError(f"{spec}: the source holds no samples")
    return encode_targets(samples, options.task, spec)


def encode_targets(samples: Samples, task: Task, spec: str) -> Samples:
    """The source's targets in the task's stored form. Sources that name their classes
    (digits, IDX, CIFAR, image folders) keep those names under classification."""
    if samples.tokens:
        return samples
    if samples.class_names is not None and task.name == "classification":
        return replace(samples, y=np.asarray(samples.y, dtype=np.int64))
    y, names = task.encode_targets(samples.y, samples.targets_from or spec)
    return replace(samples, y=y, class_names=samples.target_names or names)
