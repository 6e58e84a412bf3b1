"""A stratified, seeded train/val/test split."""

from __future__ import annotations

import numpy as np

from deepfleet.errors import UserError


def _draw(rows: np.ndarray, labels: np.ndarray | None, share: float, seed: int, name: str):
    """(rest, drawn): stratified by class labels, or a seeded permutation without them."""
    if labels is None:
        return _shuffled(rows, share, seed)
    from sklearn.model_selection import train_test_split  # slow to import; only needed here

    classes, counts = np.unique(labels[rows], return_counts=True)
    if (counts < 2).any():
        rare = classes[counts < 2]
        shown = ", ".join(str(c) for c in rare[:5]) + (" ..." if len(rare) > 5 else "")
        raise UserError(
            f"cannot draw a stratified {name} split: {len(rare)} of {len(classes)} "
            f"classes have a single sample (class {shown}); each class needs at "
            "least 2"
        )
    try:
        return train_test_split(rows, test_size=share, stratify=labels[rows], random_state=seed)
    except ValueError as err:  # e.g. a class with a single sample cannot be stratified
        raise UserError(f"cannot draw a stratified {name} split: {err}") from None


def _shuffled(rows: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded draw of round(share x rows) rows (at least one), unstratified."""
    take = min(max(1, round(len(rows) * share)), len(rows) - 1)
    order = np.random.default_rng(seed).permutation(len(rows))
    return rows[order[take:]], rows[order[:take]]


def stratified_split(
    labels: np.ndarray | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    test_rows: np.ndarray | None = None,
    rows: int | None = None,
) -> dict[str, np.ndarray]:
    """Row indices per split; every class keeps its share in every split. Without labels
    (targets that are not classes: pass `rows`), the draw is a seeded permutation.

    `test_rows` is a source's own test set: it becomes the test split as is, test_fraction
    is ignored, and val_fraction is a share of the remaining rows.
    """
    index = np.arange(len(labels) if labels is not None else int(rows or 0))
    if labels is None and len(index) < 3 and (val_fraction > 0 or test_fraction > 0):
        raise UserError(f"cannot split {len(index)} samples into train, val and test")
    parts: dict[str, np.ndarray] = {}
    if test_rows is not None:
        parts["test"] = np.asarray(test_rows, dtype=np.int64)
        rest = np.setdiff1d(index, parts["test"])
        val_share = val_fraction
    else:
        rest = index
        if test_fraction > 0:
            rest, parts["test"] = _draw(index, labels, test_fraction, seed, "test")
        val_share = val_fraction / (1.0 - test_fraction)
    if val_fraction > 0:
        rest, parts["val"] = _draw(rest, labels, val_share, seed + 1, "val")
    parts["train"] = rest
    return {name: np.sort(rows) for name, rows in parts.items()}
