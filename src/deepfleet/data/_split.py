"""A stratified, seeded train/val/test split."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Row indices per split; every class keeps its share in every split."""
    index = np.arange(len(labels))
    parts: dict[str, np.ndarray] = {}
    rest = index
    if test_fraction > 0:
        rest, parts["test"] = train_test_split(
            index, test_size=test_fraction, stratify=labels, random_state=seed)
    if val_fraction > 0:
        share = val_fraction / (1.0 - test_fraction)
        rest, parts["val"] = train_test_split(
            rest, test_size=share, stratify=labels[rest], random_state=seed + 1)
    parts["train"] = rest
    return {name: np.sort(rows) for name, rows in parts.items()}
