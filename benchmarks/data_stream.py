"""Streaming reader vs a map-style DataLoader, on MNIST-sized data written through `prepare`.

Data: 60,000 grey 28x28 uint8 images (sklearn's digits scaled up, shifted and noised, so they
compress like real scans), written as MNIST IDX files and prepared with the real command
(`deepfleet prepare ... --shards 8`).

Measured, full shuffled epochs at batch size 256, float32 scaled x and int64 y, persistent
workers; per round and worker count, a first epoch each (worker start-up included), then
steady epochs alternating reader and baseline (the figures compared):
  reader    StreamLoader(ShardStream(shards))                    with 0, 1, 2 workers
  baseline  DataLoader(map-style Dataset over the same arrays)   with 0, 1, 2 workers
  numpy     the same bytes copied by NumPy (the ceiling): a plain copy of the uint8 array, and
            a shuffled gather + float32 scale of it in memory.
Medians are reported; the ratio reader / baseline is the median over adjacent epoch pairs at
the same number of workers. Writes benchmarks/results/data_stream.json.

Run: python benchmarks/data_stream.py [--rounds 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from deepfleet.data import ShardStream, StreamLoader, load_source
from deepfleet.devices import describe_machine

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, BATCH, WORKERS = 60_000, 256, (0, 1, 2)
SCALE = np.float32(1 / 255)


def mnist_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    digits = load_source("digits")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.y), n)
    small = digits.x[pick, 0].astype(np.float32) * (255 / 16)
    big = np.kron(small, np.ones((3, 3), np.float32))  # 8x8 -> 24x24
    out = np.zeros((n, 28, 28), np.float32)
    dx, dy = rng.integers(0, 5, n), rng.integers(0, 5, n)
    for sx in range(5):
        for sy in range(5):
            rows = (dx == sx) & (dy == sy)
            out[rows, sx : sx + 24, sy : sy + 24] = big[rows]
    out += rng.normal(0, 6, out.shape) * (out > 0)
    return np.clip(out, 0, 255).astype(np.uint8), digits.y[pick]


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


class ArrayDataset(Dataset):
    """The usual map-style dataset: one sample converted per __getitem__."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]).float() * SCALE, int(self.y[i])


def epoch_rate(batches, check: int) -> float:
    """Samples per second over one epoch."""
    started = time.perf_counter()
    seen = 0
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        seen += len(y)
    seconds = time.perf_counter() - started
    assert seen >= check, (seen, check)
    return seen / seconds


def measure(
    workers: int,
    x4: np.ndarray,
    y: np.ndarray,
    shards: Path,
    round_: int,
    epochs: int,
    rates: dict[str, list[float]],
) -> None:
    """Reader and baseline side by side with persistent workers: a first epoch each (worker
    start-up included), then `epochs` steady epochs alternating reader, baseline, reader..."""
    reader = StreamLoader(ShardStream(shards, batch_size=BATCH, seed=round_), num_workers=workers)
    base = DataLoader(
        ArrayDataset(x4, y),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(round_),
    )
    rates.setdefault(f"reader_w{workers}_first_epoch", []).append(epoch_rate(reader, SAMPLES))
    rates.setdefault(f"baseline_w{workers}_first_epoch", []).append(epoch_rate(base, SAMPLES))
    for epoch in range(1, epochs + 1):
        reader.set_epoch(epoch)
        a = epoch_rate(reader, SAMPLES)
        b = epoch_rate(base, SAMPLES)
        rates.setdefault(f"reader_w{workers}", []).append(a)
        rates.setdefault(f"baseline_w{workers}", []).append(b)
        rates.setdefault(f"ratio_w{workers}", []).append(a / b)
    reader.close()


def numpy_copy_rate(x: np.ndarray) -> float:
    out = np.empty_like(x)
    started = time.perf_counter()
    np.copyto(out, x)
    return len(x) / (time.perf_counter() - started)


def numpy_gather_rate(x: np.ndarray, seed: int) -> float:
    perm = np.random.default_rng(seed).permutation(len(x))
    started = time.perf_counter()
    for lo in range(0, len(x), BATCH):
        batch = np.empty((min(BATCH, len(x) - lo), *x.shape[1:]), np.float32)
        np.multiply(x[perm[lo : lo + BATCH]], SCALE, out=batch, casting="unsafe")
    return len(x) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="steady epochs per round")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/data_stream.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deepfleet-bench-"))
    x, y = mnist_like(SAMPLES)
    src = work / "mnist"
    src.mkdir()
    write_idx(src / "train-images-idx3-ubyte", x)
    write_idx(src / "train-labels-idx1-ubyte", y)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "deepfleet",
            "prepare",
            str(src),
            "--out",
            str(work / "shards"),
            "--shards",
            "8",
            "--val",
            "0",
            "--test",
            "0",
        ],
        check=True,
        env=env,
    )
    prepare_seconds = time.perf_counter() - started
    shard_bytes = sum(p.stat().st_size for p in (work / "shards").glob("*.parquet"))
    x4 = x[:, None]  # the same arrays the shards hold, N x 1 x 28 x 28

    rates: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for w in WORKERS:
            measure(w, x4, y, work / "shards", r, args.epochs, rates)
        rates.setdefault("numpy_copy", []).append(numpy_copy_rate(x4))
        rates.setdefault("numpy_gather_float", []).append(numpy_gather_rate(x4, r))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()),
            flush=True,
        )

    median = {k: statistics.median(v) for k, v in rates.items() if not k.startswith("ratio")}
    result = {
        "benchmark": "data_stream",
        "baseline": "torch.utils.data.DataLoader over a map-style Dataset of the same arrays "
        "(same batch size, shuffle, workers)",
        "data": {
            "samples": SAMPLES,
            "shape": [1, 28, 28],
            "dtype": "uint8",
            "source": "MNIST IDX files (synthetic MNIST-like images) via deepfleet prepare",
            "shards": 8,
            "shard_bytes": shard_bytes,
            "raw_bytes": int(x.nbytes),
            "prepare_seconds": round(prepare_seconds, 2),
        },
        "batch_size": BATCH,
        "rounds": args.rounds,
        "steady_epochs_per_round": args.epochs,
        "samples_per_s_median": {k: round(v) for k, v in median.items()},
        "samples_per_s_all": {
            k: [round(v) for v in vs] for k, vs in rates.items() if not k.startswith("ratio")
        },
        "ratio_reader_vs_baseline": {  # median over adjacent (reader, baseline) epoch pairs
            f"workers_{w}": round(statistics.median(rates[f"ratio_w{w}"]), 2) for w in WORKERS
        },
        "ratio_reader_vs_baseline_all_pairs": {
            f"workers_{w}": [round(v, 2) for v in rates[f"ratio_w{w}"]] for w in WORKERS
        },
        "fraction_of_numpy_copy": {
            k: round(v / median["numpy_copy"], 4)
            for k, v in median.items()
            if not k.startswith("numpy")
        },
        "fraction_of_numpy_gather_float": {
            k: round(v / median["numpy_gather_float"], 4)
            for k, v in median.items()
            if not k.startswith("numpy")
        },
        "target": "reader >= 2x baseline at batch size 256",
        "machine": describe_machine(),
        "note": "machine shared with other jobs while measuring; ratios come from interleaved "
        "rounds in one run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("samples_per_s_median", "ratio_reader_vs_baseline")}, indent=2
        )
    )


if __name__ == "__main__":
    main()
