"""The split and the shards' rows are pinned: digests taken from the code before prepare's
memory work (int64 rows and whole-size temporaries), so its compact arrays and block-wise
steps must draw the same samples into the same shards, byte for byte."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from _image_folders import write_idx_pair

from deepfleet.config import DataSection
from deepfleet.data import prepare_from_config, stratified_split


def _digest(parts: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(parts):
        h.update(name.encode() + np.asarray(parts[name], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


# (labels, val, test, seed, test_rows, ids) -> digest of every split's rows
CASES = {
    "classes": (lambda: (_labels(50_000, 10, 0), 0.1, 0.2, 0, None, None), "c1e89dc484410d68"),
    "many classes": (
        lambda: (_labels(40_000, 700, 1), 0.15, 0.05, 7, None, None),
        "b40183f5088e0bfe",
    ),
    "no labels": (lambda: (None, 0.1, 0.2, 3, None, None), "74b8e01029cbdbcd"),
    "ids": (
        lambda: (
            _labels(30_000, 5, 2),
            0.2,
            0.1,
            11,
            None,
            np.random.default_rng(3).permutation(10**7)[:30_000] - 10**6,
        ),
        "64df128f5c87f621",
    ),
    # classes found only in the source's own test rows: val renumbers the classes it sees
    "test rows": (
        lambda: (
            np.concatenate([_labels(27_000, 20, 4), _labels(3_000, 20, 5) + 20]),
            0.1,
            0.0,
            2,
            np.arange(27_000, 30_000),
            None,
        ),
        "ad020195d55953ab",
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_split_is_the_pinned_one(name):
    make, expected = CASES[name]
    labels, val, test, seed, test_rows, ids = make()
    rows = 60_000 if labels is None else None
    parts = stratified_split(labels, val, test, seed, test_rows=test_rows, rows=rows, ids=ids)
    assert _digest(parts) == expected
    if labels is not None:  # compact labels draw the same split
        small = labels.astype(np.uint8 if labels.max() < 256 else np.uint16)
        again = stratified_split(small, val, test, seed, test_rows=test_rows, ids=ids)
        assert _digest(again) == expected


def test_prepared_shards_hold_the_pinned_rows(tmp_path):
    write_idx_pair(tmp_path / "idx", 36_000)
    write_idx_pair(tmp_path / "idx", 4_000, prefix="t10k")
    data = DataSection(source=f"mnist:{tmp_path / 'idx'}", shards=5, workers=2)
    manifest = prepare_from_config(data, tmp_path / "out", seed=5)
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        for shard in manifest.raw["splits"][split]["shards"]:
            ids = pq.read_table(tmp_path / "out" / shard["file"], columns=["id"])
            h.update(split.encode() + ids.column("id").to_numpy().tobytes())
    assert h.hexdigest()[:16] == "0c239de587b74b4e"
