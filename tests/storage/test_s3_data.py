"""Prepared data on a real S3 server (SeaweedFS on 127.0.0.1): prepare --out s3://, verify-data
on a URL, and the training stream reading remote shards through the node's cache, each
compared with the same data set on local disk."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from s3_fixtures import *  # noqa: F403 - the S3 server fixtures
from s3_fixtures import admin_fs

from deepfleet.config import DataSection, TaskSection
from deepfleet.data import (
    Samples,
    ShardStream,
    StreamLoader,
    open_prepared,
    prepare_from_config,
    read_manifest,
    read_split,
    write_dataset,
)
from deepfleet.errors import UserError
from deepfleet.runs import RunPaths
from deepfleet.storage import CacheSettings, Store

CLI = [sys.executable, "-m", "deepfleet"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _local_digits(folder: Path) -> Path:
    """digits prepared on local disk with the CLI's defaults."""
    out = folder / "digits"
    prepare_from_config(
        DataSection(source="digits"), out, 0, TaskSection(name="classification", path=".")
    )
    return out


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory) -> Path:
    """2400 samples of 1x32x32 random uint8 (incompressible, about 1 MB) in 16 training
    shards; pixel (0, 0) and (0, 1) encode the id."""
    rng = np.random.default_rng(5)
    n = 2400
    x = rng.integers(0, 256, size=(n, 1, 32, 32), dtype=np.uint8)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    samples = Samples(
        x=x, y=np.arange(n) % 3, class_names=list("abc"), description="test", scale=1 / 255
    )
    out = tmp_path_factory.mktemp("many") / "data"
    write_dataset(samples, out, shards=16, val_fraction=0, test_fraction=0, seed=0)
    return out


@pytest.fixture(scope="module")
def data_bucket(s3_server) -> str:
    """One bucket for this module (each new bucket costs the server volumes): tests take
    their own prefix in it."""
    name = f"d-{uuid.uuid4().hex[:12]}"
    admin_fs(s3_server).create_dir(name)
    return name


@pytest.fixture
def prefix(data_bucket) -> str:
    return f"s3://{data_bucket}/{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def many_url(many_shards, data_bucket, s3_server) -> str:
    """many_shards uploaded once for the module."""
    url = f"s3://{data_bucket}/many"
    _upload(many_shards, url, {"endpoint_url": s3_server.endpoint})
    return url


def _upload(local: Path, url: str, options: dict) -> None:
    store = Store(url, options)
    for path in sorted(local.iterdir()):
        store.put_file(path, path.name)


def _all_windows(stream: ShardStream, epoch: int, after=None) -> tuple[list, list]:
    stream.epoch = epoch
    ids, xs = [], []
    for k, (_, i, x, _) in enumerate(stream):
        ids.append(i.numpy())
        xs.append(x.numpy())
        if after is not None:
            after(k)
    return ids, xs


def _cache_bytes(folder: Path) -> int:
    """Bytes of the files in a cache folder now (files evicted while counting count 0)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and path.suffix != ".lock":
                total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_prepare_digits_to_s3_is_byte_identical_to_local(prefix, s3_options, tmp_path):
    local = _local_digits(tmp_path / "local")
    url = prefix
    cache = tmp_path / "cache"
    done = _cli(
        "prepare",
        "digits",
        "--out",
        url,
        "--storage-option",
        f"endpoint_url={s3_options['endpoint_url']}",
        env={"DEEPFLEET_CACHE": str(cache)},
    )
    assert done.returncode == 0, done.stderr
    assert f"prepared {url}: test 360, train 1257, val 180" in " ".join(done.stdout.split())
    store = Store(url, s3_options)
    names = sorted(p.name for p in local.iterdir())
    assert store.list() == names  # nothing else: no temporary names, no staging
    for name in names:
        assert store.read_bytes(name) == (local / name).read_bytes(), name
    assert not any((cache / "shards" / "prepare").iterdir())  # the staging folder is gone
    # A second prepare to the same URL is refused before the source is read.
    data = DataSection(source="digits", storage_options=s3_options, cache_dir=str(cache))
    with pytest.raises(UserError, match="a prepared data set is already there"):
        prepare_from_config(data, url, 0, TaskSection(name="classification", path="."))
    assert store.list() == names


def test_an_interrupted_upload_resumes_and_skips_what_is_there(
    prefix, s3_options, tmp_path, caplog
):
    url = prefix
    local = _local_digits(tmp_path / "local")
    _upload(local, url, s3_options)
    store = Store(url, s3_options)
    # As a prepare killed during its upload leaves it: some shards there, no manifest.
    shards = sorted(n for n in store.list() if n.endswith(".parquet"))
    store.fs.delete_file(store.location.join("manifest.json"))
    store.fs.delete_file(store.location.join(shards[0]))
    data = DataSection(source="digits", storage_options=s3_options, cache_dir=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="deepfleet.data"):
        manifest = prepare_from_config(data, url, 0, TaskSection(name="classification", path="."))
    skipped = [r.getMessage() for r in caplog.records if "already uploaded" in r.getMessage()]
    assert len(skipped) == len(shards) - 1 and not any(shards[0] in m for m in skipped)
    assert manifest.root == url and manifest.remote is not None
    for name in sorted(p.name for p in local.iterdir()):
        assert store.read_bytes(name) == (local / name).read_bytes(), name


def test_verify_data_on_s3_catches_a_flipped_byte(prefix, s3_options, tmp_path):
    local = _local_digits(tmp_path)
    url = prefix
    _upload(local, url, s3_options)
    # The endpoint from the AWS SDKs' standard variable: no option needed.
    env = {"AWS_ENDPOINT_URL": s3_options["endpoint_url"]}
    ok = _cli("verify-data", url, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"ok {url}: ")
    store = Store(url, s3_options)
    victim = sorted(n for n in store.list() if n.startswith("train-"))[2]
    data = bytearray(store.read_bytes(victim))
    data[len(data) // 2] ^= 0x01
    store.write_bytes(victim, bytes(data))
    bad = _cli("verify-data", url, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in bad.stderr
    assert f"shard {victim} does not match its sha256 in the manifest" in lines[0]


@pytest.mark.parametrize("order", ["rank", "global"])
def test_the_s3_stream_yields_the_local_streams_batches(
    many_shards, many_url, s3_options, tmp_path, order
):
    url = many_url
    shard = max(p.stat().st_size for p in many_shards.glob("*.parquet"))
    cache = CacheSettings(tmp_path / "cache", 4 * shard)  # a quarter of the data set
    remote = read_manifest(url, s3_options, cache)
    local = read_manifest(many_shards)
    for world in (1, 2):
        for rank in range(world):
            args = dict(batch_size=32, rank=rank, world_size=world, seed=1, order=order)
            a = ShardStream(remote, shuffle_buffer=96, **args)
            b = ShardStream(local, shuffle_buffer=96, **args)
            for epoch in (0, 1):
                ids_a, xs_a = _all_windows(a, epoch)
                ids_b, xs_b = _all_windows(b, epoch)
                assert len(ids_a) == len(ids_b) > 0
                for i, j, x, y in zip(ids_a, ids_b, xs_a, xs_b, strict=True):
                    np.testing.assert_array_equal(i, j)
                    np.testing.assert_array_equal(x, y)
    assert _cache_bytes(cache.folder) <= cache.limit
    if order == "global":  # DataLoader workers (forked) make their own S3 client and cache
        wide = CacheSettings(tmp_path / "cache", 10 * shard)
        args = dict(batch_size=32, seed=1, order=order, shuffle_buffer=96)
        a = StreamLoader(ShardStream(read_manifest(url, s3_options, wide), **args), num_workers=2)
        b = StreamLoader(ShardStream(local, **args), num_workers=0)
        for loader in (a, b):
            loader.set_epoch(3)
        for (xa, _), (xb, _) in zip(a, b, strict=True):
            assert a.last_ids.equal(b.last_ids) and xa.equal(xb)
    split_a, split_b = read_split(remote, "train"), read_split(local, "train")
    assert split_a.ids.equal(split_b.ids) and split_a.x.equal(split_b.x)


def test_the_cache_stays_within_its_limit_while_streaming_more(
    many_shards, many_url, s3_options, tmp_path
):
    url = many_url
    total = sum(p.stat().st_size for p in many_shards.glob("*.parquet"))
    shard = max(p.stat().st_size for p in many_shards.glob("*.parquet"))
    limit = 3 * shard + shard // 2
    assert total > 4 * limit
    data = DataSection(storage_options=s3_options, cache_dir=str(tmp_path / "c"), cache_limit=limit)
    manifest = open_prepared(url, data)
    stream = ShardStream(manifest, batch_size=16, seed=2, shuffle_buffer=48)
    sizes: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # sampled while downloads and evictions happen, not only after
        while not stop.is_set():
            sizes.append(_cache_bytes(tmp_path / "c"))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        seen = []
        for epoch in (0, 1):
            ids, _ = _all_windows(stream, epoch)
            seen.append(np.sort(np.concatenate(ids)))
    finally:
        stop.set()
        watcher.join()
    assert seen[0].tolist() == seen[1].tolist() == list(range(2400))
    assert max(sizes) <= limit and max(sizes) > 2 * shard  # the cache was really used


def test_the_stream_rides_out_a_stopped_server(
    many_shards, many_url, s3_options, s3_server, tmp_path, caplog
):
    url = many_url
    shard = max(p.stat().st_size for p in many_shards.glob("*.parquet"))
    cache = CacheSettings(tmp_path / "cache", 3 * shard)  # shards are downloaded mid-epoch
    args = dict(batch_size=16, seed=4, shuffle_buffer=32, order="global")
    expected, _ = _all_windows(ShardStream(read_manifest(many_shards), **args), 0)
    stream = ShardStream(read_manifest(url, s3_options, cache), **args)
    restarted = threading.Event()

    def outage(k: int) -> None:
        if k == 5:  # mid-epoch: stopped now, started again 3 s later while the stream waits
            s3_server.stop()

            def start() -> None:
                time.sleep(3)
                s3_server.start()
                restarted.set()

            threading.Thread(target=start).start()

    with caplog.at_level(logging.WARNING, logger="deepfleet.storage"):
        ids, _ = _all_windows(stream, 0, after=outage)
    assert restarted.wait(60)
    assert len(ids) == len(expected)
    for got, want in zip(ids, expected, strict=True):
        np.testing.assert_array_equal(got, want)  # nothing lost, nothing repeated
    assert any("retrying" in r.getMessage() for r in caplog.records)


def test_bad_urls_missing_buckets_and_credentials_are_one_line(s3_options, tmp_path):
    env = {"AWS_ENDPOINT_URL": s3_options["endpoint_url"], "DEEPFLEET_CACHE": str(tmp_path)}
    cases = [
        (("verify-data", "s3://no-such-bucket-here/x"), "the bucket does not exist"),
        (
            ("verify-data", "s3://b/x", "--storage-option", "secret=abc"),
            "would put a credential in the job file",
        ),
        (("prepare", "digits", "--out", "s3://no-such-bucket-here/d"), "does not exist"),
    ]
    for args, message in cases:
        done = _cli(*args, env=env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, (args, done.stderr)
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
        assert "abc" not in done.stderr  # a credential never echoed
    from deepfleet.cli._app import parse_storage_options
    from deepfleet.cli._data import _data_section

    with pytest.raises(UserError, match="expected s3://BUCKET/PREFIX"):
        read_manifest("s3:///x")
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_storage_options(["nonsense"])
    with pytest.raises(UserError, match="credential"):
        _data_section(storage_options={"aws_secret_access_key": "abc"})
    with pytest.raises(UserError, match="not a size"):
        _data_section(cache_limit="lots")


def test_a_job_uses_a_prepared_data_set_on_s3(many_url, s3_options, tmp_path):
    """data.prepared = "s3://...": the run folder keeps the URL as it is, and the run's
    context reads the data set with the job's storage options and cache settings."""
    from deepfleet.config import load_job
    from deepfleet.context import run_context
    from deepfleet.jobs import stage_prepare
    from deepfleet.parallel import DistEnv
    from deepfleet.runs import create_run

    endpoint = s3_options["endpoint_url"]
    job = tmp_path / "job.toml"
    job.write_text(
        f'[run]\nname = "s3"\nruns_dir = "runs"\n[data]\nprepared = "{many_url}"\n'
        f'storage_options = {{ endpoint_url = "{endpoint}" }}\ncache_dir = "cache"\n'
        'cache_limit = "3MB"\n'
    )
    config = load_job(str(job))
    assert config.data.prepared == many_url and config.data.cache_dir == str(tmp_path / "cache")
    paths = create_run(config)
    stage_prepare(paths, config)
    assert paths.data_dir() == many_url
    ctx = run_context(paths, DistEnv())
    remote = ctx.manifest.remote
    assert remote is not None and ctx.manifest.root == many_url
    assert remote.cache_settings == CacheSettings(tmp_path / "cache", 3_000_000)
    assert remote.options == {"endpoint_url": endpoint}
    paths.link_data(tmp_path / "local")  # a local folder is still made absolute
    assert paths.data_dir() == tmp_path / "local"
    assert RunPaths(paths.root).data_dir() == tmp_path / "local"


def test_storage_options_leave_local_data_alone(many_shards, s3_options, tmp_path):
    """A job's storage options (for its URLs) do not stop it reading or writing local data."""
    data = DataSection(source="digits", storage_options=s3_options)
    manifest = open_prepared(many_shards, data)
    assert manifest.remote is None and manifest.rows("train") == 2400
    written = prepare_from_config(data, tmp_path / "d", 0, TaskSection(name="classification"))
    assert written.remote is None and written.rows("test") == 360


def test_encrypted_shards_go_to_s3_as_they_are(prefix, s3_options, tmp_path):
    from deepfleet.data import new_data_key, verify_dataset

    key = new_data_key(tmp_path / "data.key")
    data = DataSection(
        source="digits", key=str(key), storage_options=s3_options, cache_dir=str(tmp_path / "c")
    )
    manifest = prepare_from_config(data, prefix, 0, TaskSection(name="classification", path="."))
    assert manifest.encryption is not None
    verify_dataset(prefix, s3_options)  # the encrypted bytes against their digests
    plain = read_split(read_manifest(_local_digits(tmp_path / "plain")), "test")
    got = read_split(manifest, "test", key=str(key))
    assert got.ids.equal(plain.ids) and got.x.equal(plain.x) and got.y.equal(plain.y)
    with pytest.raises(UserError):
        read_split(manifest, "test")  # no key: refused, one line


def _s3_rank(rank: int, world: int, port: int, url: str, endpoint: str, cache, out: str) -> None:
    """One gloo rank streaming its share from S3 through the node's (shared) cache."""
    import json

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        manifest = read_manifest(url, {"endpoint_url": endpoint}, cache)
        stream = ShardStream(
            manifest,
            batch_size=16,
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            seed=6,
            shuffle_buffer=64,
            order="global",
        )
        ids, _ = _all_windows(stream, 1)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, [i.tolist() for i in ids])
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_gloo_ranks_stream_from_s3_through_one_cache(
    many_shards, many_url, s3_options, tmp_path
):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    shard = max(p.stat().st_size for p in many_shards.glob("*.parquet"))
    cache = CacheSettings(tmp_path / "cache", 6 * shard)  # both ranks share it
    out = tmp_path / "gathered.json"
    args = (2, port, many_url, s3_options["endpoint_url"], cache, str(out))
    mp.start_processes(_s3_rank, args=args, nprocs=2, join=True, start_method="fork")
    gathered = json.loads(out.read_text())
    for rank in range(2):
        local = ShardStream(
            many_shards,
            batch_size=16,
            rank=rank,
            world_size=2,
            seed=6,
            shuffle_buffer=64,
            order="global",
        )
        expected, _ = _all_windows(local, 1)
        assert gathered[rank] == [i.tolist() for i in expected]
    assert _cache_bytes(cache.folder) <= cache.limit


def test_a_text_data_set_on_s3_carries_its_tokenizer(prefix, s3_options, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(200)))
    task = TaskSection(name="causal_lm", path=".")
    settings = dict(source=f"text:{corpus}", seq_len=16, vocab_size=300)
    local = prepare_from_config(DataSection(**settings), tmp_path / "local", 0, task)
    data = DataSection(**settings, storage_options=s3_options, cache_dir=str(tmp_path / "c"))
    remote = prepare_from_config(data, prefix, 0, task)
    want = (tmp_path / "local" / "tokenizer.json").read_bytes()
    assert remote.file_bytes("tokenizer.json") == want
    assert remote.file_path("tokenizer.json").read_bytes() == want  # for a bundle, via the cache
    assert read_split(remote, "train").x.equal(read_split(local, "train").x)
