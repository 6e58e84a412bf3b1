"""A seeded train/val/test split drawn from a hash of each sample's id, stratified by class.

Each sample gets a rank key: a 64-bit mix of (seed, id). Inside each class (or over all
samples when there are no class labels) the samples with the smallest keys go to test, the
next ones to val, the rest to train. The split therefore needs only the ids and the labels,
never the samples, and it is the same whatever order the source lists them in or however
many processes write the shards; every class keeps its share (to within one sample) in every split.
"""

from __future__ import annotations

import math

import numpy as np

from deepfleet.data._rows import row_dtype
from deepfleet.errors import UserError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_BLOCK = 1 << 16  # keys mixed at once (a 512 KiB scratch)


def sample_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (id + seed x golden ratio): a uniform 64-bit key per sample id, the
    same on every platform (pure uint64 arithmetic, wrapping). One array of keys, mixed in
    place a block at a time: at a million samples a whole-size temporary is 8 MB of
    prepare's peak."""
    z = np.array(ids, dtype=np.int64).view(np.uint64)  # a copy: the ids are left as they are
    scratch = np.empty(min(len(z), _BLOCK), np.uint64)
    with np.errstate(over="ignore"):
        z += np.uint64(seed + 1) * _GOLDEN
        for lo in range(0, len(z), _BLOCK):
            block = z[lo : lo + _BLOCK]
            tmp = scratch[: len(block)]
            for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None)):
                np.right_shift(block, np.uint64(shift), out=tmp)
                np.bitwise_xor(block, tmp, out=block)
                if factor is not None:
                    np.multiply(block, np.uint64(factor), out=block)
    return z


class _Classes:
    """The classes present in `rows`, numbered 0, 1, ... in sorted order, and the rows per
    class; a UserError when a class has a single sample (it cannot be split). No sort of the
    rows' labels: a search among the few class values and a bincount, a block of rows at a
    time (a whole-size class index would be 8 MB of prepare's peak at a million rows)."""

    def __init__(self, labels: np.ndarray, rows: np.ndarray, name: str) -> None:
        self.labels, self.rows = labels, rows
        self.values = np.unique(labels)
        self.renumber: np.ndarray | None = None
        counts = np.zeros(len(self.values), np.int64)
        for lo in range(0, len(rows), _BLOCK):
            counts += np.bincount(self._search(lo, lo + _BLOCK), minlength=len(self.values))
        present = counts > 0
        if (counts[present] < 2).any():
            rare = self.values[present & (counts < 2)]
            shown = ", ".join(str(c) for c in rare[:5]) + (" ..." if len(rare) > 5 else "")
            raise UserError(
                f"cannot draw a stratified {name} split: {len(rare)} of {int(present.sum())} "
                f"classes have a single sample (class {shown}); each class needs at "
                "least 2"
            )
        if not present.all():  # the classes present renumbered 0, 1, ...
            self.renumber = np.cumsum(present) - 1
        self.counts = counts[present]

    def _search(self, lo: int, hi: int) -> np.ndarray:
        return np.searchsorted(self.values, self.labels[self.rows[lo:hi]])

    def index(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The class numbers of rows[lo:hi] (int64)."""
        found = self._search(lo, len(self.rows) if hi is None else hi)
        return found if self.renumber is None else self.renumber[found]


def _groups(
    rows: np.ndarray, labels: np.ndarray | None, keys: np.ndarray, name: str
) -> list[np.ndarray]:
    """The rows of each class (one group without labels), each ordered by its key. `keys`
    are the rows' own keys (keys[i] is rows[i]'s); they are overwritten."""
    if labels is None:
        return [rows[np.argsort(keys, kind="stable")]]
    classes = _Classes(labels, rows, name)
    # One sort orders every class at once: the class index in the top 16 bits, the key's
    # top 48 bits below it (ties, one in 2^48, keep the rows' order: still deterministic).
    # Built in place, a block of rows at a time: each per-row temporary is 8 MB of
    # prepare's peak at a million rows.
    if len(classes.counts) >= 1 << 16:
        order = rows[np.lexsort((keys, classes.index()))]
    else:
        np.right_shift(keys, np.uint64(16), out=keys)
        for lo in range(0, len(rows), _BLOCK):
            top = classes.index(lo, lo + _BLOCK).view(np.uint64)  # >= 0: the same bits
            np.left_shift(top, np.uint64(48), out=top)
            keys[lo : lo + _BLOCK] |= top
        order = rows[np.argsort(keys, kind="stable")]
    return np.split(order, np.cumsum(classes.counts)[:-1])


def _allocate(sizes: list[int], share: float, stratified: bool) -> list[int]:
    """How many of each group to draw: ceil(share x total) in all with classes (as
    scikit-learn's train_test_split), round() without; shared out by largest remainder,
    so every class keeps its share to within one sample."""
    total = sum(sizes)
    want = math.ceil(share * total - 1e-9) if stratified else round(share * total)
    want = min(max(want, 1), total - 1)
    exact = np.array(sizes, dtype=np.float64) * share
    takes = np.floor(exact).astype(np.int64)
    extra = want - int(takes.sum())
    if extra > 0:  # the largest remainders first; ties go to the first class
        order = np.argsort(-(exact - takes), kind="stable")
        room = [k for k in order if takes[k] < sizes[k]]
        for k in room[:extra]:
            takes[k] += 1
    return [int(t) for t in takes]


def _draw(
    rows: np.ndarray, labels: np.ndarray | None, keys: np.ndarray, share: float, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """(rest, drawn): each class's share, the samples with the smallest keys (`keys`:
    the rows' own, overwritten)."""
    groups = _groups(rows, labels, keys, name)
    takes = _allocate([len(g) for g in groups], share, labels is not None)
    drawn = np.concatenate([g[:t] for g, t in zip(groups, takes, strict=True)])
    rest = np.concatenate([g[t:] for g, t in zip(groups, takes, strict=True)])
    return rest, drawn


def stratified_split(
    labels: np.ndarray | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    test_rows: np.ndarray | None = None,
    rows: int | None = None,
    ids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Row indices per split, each sorted (int32 below 2^31 rows). Without labels (targets
    that are not classes: pass `rows`), the draw is over all samples at once. `ids` are the
    samples' ids (default: their row numbers); the draw depends on (seed, id), not on the
    rows' order.

    `test_rows` is a source's own test set: it becomes the test split as is, test_fraction
    is ignored, and val_fraction is a share of the remaining rows.
    """
    count = len(labels) if labels is not None else int(rows or 0)
    # Row numbers as int32 while they fit: every per-row array of the split is half as big.
    index = np.arange(count, dtype=row_dtype(count))
    if labels is None and count < 3 and (val_fraction > 0 or test_fraction > 0):
        raise UserError(f"cannot split {count} samples into train, val and test")
    parts: dict[str, np.ndarray] = {}
    if test_rows is not None:
        parts["test"] = np.asarray(test_rows, dtype=index.dtype)
        rest = np.setdiff1d(index, parts["test"])
        val_share = val_fraction
    else:
        rest = index
        if test_fraction > 0:
            keys = sample_keys(index if ids is None else ids, seed)
            rest, parts["test"] = _draw(index, labels, keys, test_fraction, "test")
            del keys  # freed before val's keys are drawn
        val_share = val_fraction / (1.0 - test_fraction)
    if val_fraction > 0:
        # A second, independent key order for val, so val is not "the next-smallest keys".
        # Keys of the remaining rows only: each row's key depends on its id alone.
        val_keys = sample_keys(rest if ids is None else ids[rest], seed + 1)
        rest, parts["val"] = _draw(rest, labels, val_keys, val_share, "val")
        del val_keys
    parts["train"] = rest
    return {name: np.sort(part) for name, part in parts.items()}
