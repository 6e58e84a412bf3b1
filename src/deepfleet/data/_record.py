"""The manifest of a written data set: what the samples are, how they were split, and the
entry (file, rows, sha256) of every shard."""

from __future__ import annotations

from typing import Any

import numpy as np

from deepfleet import __version__
from deepfleet.data._crypto import ALGORITHM, DataKey
from deepfleet.data._encoded import IMAGE
from deepfleet.data._manifest import FORMAT, sealed
from deepfleet.data._samples import MappedRows, Samples
from deepfleet.data._tensor import describe


def class_targets(samples: Samples) -> bool:
    """Whether the targets are one class index per sample."""
    return samples.y.ndim == 1 and np.issubdtype(samples.y.dtype, np.integer)


def encoding(samples: Samples) -> dict[str, Any]:
    """features.encoding (and what goes with it) for samples that are not plain tensors."""
    if samples.tokens:
        return {"encoding": "token_ids"}
    if hasattr(samples.x, "arrow_columns"):
        # resize_ratio: evaluation resizes the shorter side to size x this, then centre-crops
        return {"encoding": IMAGE, "mode": samples.x.mode, "resize_ratio": 256 / 224}
    return {}


def targets_record(samples: Samples, parts: dict[str, np.ndarray]) -> dict[str, Any]:
    """The manifest's record of the targets; float targets get the training split's mean
    and std (a regression standardises with them)."""
    y = samples.y
    shape = list(y.shape[1:]) if y.ndim > 1 or not class_targets(samples) else []
    if y.ndim == 1 and not class_targets(samples):
        shape = [1]
    stats = dict(samples.target_stats)
    if np.issubdtype(y.dtype, np.floating) and not isinstance(y, MappedRows):
        from deepfleet.tasks import target_stats

        stats.update(target_stats(y[parts["train"]]))
    return {
        "dtype": "int64" if class_targets(samples) else str(y.dtype),
        "shape": shape,
        "names": list(samples.class_names or []),
        "stats": stats,
    }


def manifest_record(
    samples: Samples,
    parts: dict[str, np.ndarray],
    jobs: list,
    entries: list,
    settings: dict[str, Any],
    key: DataKey | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The sealed manifest. `settings`: seed, val_fraction, test_fraction, source."""
    num_classes = len(samples.class_names or [])
    classes = class_targets(samples)
    splits: dict[str, Any] = {}
    for (split, _, _), entry in zip(jobs, entries, strict=True):
        rows = parts[split]
        part: dict[str, Any] = {"rows": int(len(rows))}
        if classes:
            part["class_histogram"] = np.bincount(samples.y[rows], minlength=num_classes).tolist()
        splits.setdefault(split, {**part, "shards": []})["shards"].append(entry)
    shape = list(samples.sample_shape)
    encoded = hasattr(samples.x, "arrow_columns")
    schema = {
        "id": "int64",
        "label": "int64"
        if classes
        else describe(samples.y.dtype, list(extra["targets"]["shape"]) or [1]),
        "x": "binary: the image file's bytes (JPEG, PNG or WebP)"
        if encoded
        else describe(samples.x.dtype, shape),
    }
    if encoded:
        schema |= {"height": "int32", "width": "int32"}
    manifest = {
        "format": FORMAT,
        "deepfleet_version": __version__,
        "source": settings["source"] or {"description": samples.description},
        "features": {
            "dtype": str(samples.x.dtype),
            "shape": shape,
            "scale": samples.scale,
            **encoding(samples),
        },
        "schema": schema,
        "class_names": samples.class_names or [],
        **extra,
        "seed": settings["seed"],
        "split_fractions": {"val": settings["val_fraction"], "test": settings["test_fraction"]},
        "test_split": "source" if samples.test_rows is not None else "drawn",
        "splits": splits,
    }
    if key is not None:
        manifest["encryption"] = {
            "algorithm": ALGORITHM,
            "key_id": key.key_id,
            "scheme": "parquet-modular-encryption",
        }
    return sealed(manifest, key.authenticate if key is not None else None)
