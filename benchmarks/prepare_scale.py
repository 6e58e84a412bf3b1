"""prepare's memory and time against the data set's size, and against a plain writer.

Data: N grey 28x28 uint8 images in 10 classes (sklearn's digits scaled up, shifted and
noised, so they compress like scans), written as an uncompressed MNIST IDX pair in chunks.
For each N, in one run, alternately:
  deepfleet  `deepfleet prepare IDX --shards 8 --workers W` (split 0.1 val / 0.2 test)
  plain      a plain script: read the whole array (np.fromfile), write the same Parquet
             layout (id, label, x as fixed-size binary, zstd, 5,349-row groups) in 8 files
Measured: wall time and the peak RSS and PSS of the process tree (psutil, every 20 ms).
Targets: deepfleet's peak at the largest N at most 1.2x its peak at the smallest (memory
flat in N), and its wall time at most 1.5x the plain writer's at the largest N.

Run: python benchmarks/prepare_scale.py [--sizes 100000 1000000] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tree_rss import run_measured  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 50_000


def write_mnist_like(folder: Path, n: int) -> None:
    """IDX files written a chunk at a time (the generator never holds N images)."""
    from data_stream import mnist_like  # the same generator as the streaming benchmark

    folder.mkdir(parents=True)
    images = (folder / "train-images-idx3-ubyte").open("wb")
    labels = (folder / "train-labels-idx1-ubyte").open("wb")
    images.write(bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes())
    labels.write(bytes([0, 0, 8, 1]) + np.array([n], ">u4").tobytes())
    for start in range(0, n, CHUNK):
        x, y = mnist_like(min(CHUNK, n - start), seed=start)
        images.write(x.tobytes())
        labels.write(y.astype(np.uint8).tobytes())
    images.close()
    labels.close()


def plain_writer(src: Path, out: Path, shards: int = 8) -> None:
    """The baseline: the whole array in memory, then pq.write_table per shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.fromfile(src / "train-images-idx3-ubyte", np.uint8, offset=16).reshape(-1, 784)
    y = np.fromfile(src / "train-labels-idx1-ubyte", np.uint8, offset=8).astype(np.int64)
    out.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(y)), shards)):
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        values = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(784), hi - lo, [None, pa.py_buffer(x[lo:hi].reshape(-1))]
        )
        table = pa.table({"id": np.arange(lo, hi), "label": y[lo:hi], "x": values})
        pq.write_table(
            table, out / f"train-{k:05d}.parquet", row_group_size=5349, compression="zstd"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/prepare_scale.json")
    args = parser.parse_args()
    from deepfleet.devices import describe_machine

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="deepfleet-bench-"))
    rows = {}
    try:
        for n in args.sizes:
            src = work / f"mnist-{n}"
            write_mnist_like(src, n)
            runs: dict[str, list] = {"deepfleet": [], "plain": []}
            for r in range(args.rounds):
                out = work / f"out-{n}-{r}"
                runs["deepfleet"].append(
                    run_measured(
                        [
                            sys.executable,
                            "-m",
                            "deepfleet",
                            "prepare",
                            f"mnist:{src}",
                            "--out",
                            str(out),
                            "--shards",
                            "8",
                            "--workers",
                            str(args.workers),
                        ],
                        env,
                    )
                )
                shutil.rmtree(out)
                runs["plain"].append(
                    run_measured([sys.executable, __file__, "--plain", str(src), str(out)], env)
                )
                shutil.rmtree(out)
            shutil.rmtree(src)
            best = {k: min(v, key=lambda m: m["wall_s"]) for k, v in runs.items()}
            rows[n] = {
                **{k: v for k, v in best.items()},
                "all": runs,
                "wall_ratio": round(best["deepfleet"]["wall_s"] / best["plain"]["wall_s"], 2),
            }
            print(n, json.dumps(rows[n]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small, large = min(rows), max(rows)
    peak = {n: max(m["peak_rss_mb"] for m in rows[n]["all"]["deepfleet"]) for n in rows}
    pss = {n: max(m["peak_pss_mb"] for m in rows[n]["all"]["deepfleet"]) for n in rows}
    result = {
        "benchmark": "deepfleet prepare of N MNIST-sized samples: wall time and peak RSS "
        "of the process tree, against a plain single-array Parquet writer",
        "workers": args.workers,
        "sizes": rows,
        "peak_rss_ratio_largest_vs_smallest": round(peak[large] / peak[small], 3),
        "peak_pss_ratio_largest_vs_smallest": round(pss[large] / pss[small], 3),
        "wall_ratio_vs_plain_at_largest": rows[large]["wall_ratio"],
        "targets": "peak RSS at the largest N <= 1.2x at the smallest; wall <= 1.5x plain",
        "machine": describe_machine(),
        "note": "shared 2-core machine; RSS summed over the process tree (pages shared "
        "after fork counted in each process)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in list(result)[3:6]}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--plain":
        plain_writer(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
