"""Image folders written with Pillow for the encoded-image tests: real JPEG and PNG files of
varied sizes, two classes told apart by their dominant colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def colour_folder(root: Path, per_class: int = 20, seed: int = 0) -> dict[str, Path]:
    """blue/ and red/ subfolders; every other file a JPEG, the rest PNG; sizes 40..89 px.
    Returns {relative name: path} in the order the source lists them (class, then name)."""
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(["blue", "red"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(40, 90, 2))
            pixels = rng.integers(0, 80, (h, w, 3)).astype(np.uint8)
            pixels[..., 2 if k == 0 else 0] += 150
            suffix = "jpg" if i % 2 else "png"
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.{suffix}")
    return {f"{c.name}/{p.name}": p for c in sorted(root.iterdir()) for p in sorted(c.iterdir())}


def write_idx_pair(folder: Path, n: int, prefix: str = "train", gz: bool = False) -> None:
    """An MNIST-style IDX pair of n 28x28 images (written in chunks: n may be large), pixels
    a cheap function of the row so they compress like scans do, labels row mod 10."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    base = (np.add.outer(np.arange(28), np.arange(28)) % 7 * 30).astype(np.uint8).reshape(-1)
    with opener(folder / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as images:
        images.write(bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes())
        for start in range(0, n, 20_000):
            rows = np.arange(start, min(n, start + 20_000))
            block = np.tile(base, (len(rows), 1))
            block[:, :8] = (rows[:, None] >> np.arange(0, 64, 8)) & 0xFF
            images.write(block.tobytes())
    with opener(folder / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as labels:
        labels.write(bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes())
        labels.write((np.arange(n) % 10).astype(np.uint8).tobytes())
