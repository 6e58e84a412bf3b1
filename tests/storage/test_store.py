"""Reads, atomic writes and listings against a real S3 server (and a local folder), and the
one-line errors for a missing bucket and refused credentials."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_fixtures import *  # noqa: F403 - the S3 server fixtures
from seaweed import SECRET_KEY

from deepfleet.errors import StorageError, UserError
from deepfleet.storage import RetryPolicy, Store

FAST = RetryPolicy(attempts=2, base=0.05)


@pytest.fixture(params=["s3", "local"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(tmp_path / "root")
    bucket = request.getfixturevalue("bucket")
    return Store(f"s3://{bucket}/runs/x", request.getfixturevalue("s3_options"))


def test_write_read_list_round_trip(store, tmp_path):
    store.write_bytes("shards/part-000.bin", b"a" * 10)
    store.write_bytes("shards/part-001.bin", b"b" * 20)
    store.write_bytes("manifest.json", b"{}")
    local = tmp_path / "big.bin"
    local.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: a multipart upload on S3
    store.put_file(local, "shards/part-002.bin")
    assert store.list() == [
        "manifest.json",
        "shards/part-000.bin",
        "shards/part-001.bin",
        "shards/part-002.bin",
    ]
    assert store.list("shards/") == [f"shards/part-00{i}.bin" for i in range(3)]
    assert store.list("nothing-here/") == []
    assert store.read_bytes("shards/part-001.bin") == b"b" * 20
    assert store.read_bytes("shards/part-002.bin") == local.read_bytes()
    assert store.size("shards/part-002.bin") == 10_240_000
    assert store.exists("manifest.json") and not store.exists("nope")
    # Overwriting replaces the whole object and leaves no temporary name behind.
    store.write_bytes("manifest.json", b'{"v": 2}')
    assert store.read_bytes("manifest.json") == b'{"v": 2}'
    assert len(store.list()) == 4


def test_parquet_through_the_file_system(store):
    table = pa.table({"x": list(range(1000)), "y": [float(i) / 3 for i in range(1000)]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.write_bytes("t.parquet", sink.getvalue())
    read = pq.read_table(store.location.join("t.parquet"), filesystem=store.fs)
    assert read.equals(table)


def test_a_failed_write_leaves_nothing_under_the_name(store, tmp_path):
    store.write_bytes("keep.bin", b"old")

    class Boom(Exception):
        pass

    def fill(out):
        out.write(b"half of it")
        raise Boom

    with pytest.raises(Boom):
        store._write("keep.bin", fill)
    with pytest.raises(Boom):
        store._write("new.bin", fill)
    assert store.read_bytes("keep.bin") == b"old"
    assert store.list() == ["keep.bin"]


def test_missing_object_and_missing_bucket_are_one_line(s3_options, bucket):
    store = Store(f"s3://{bucket}/p", s3_options, retry=FAST)
    with pytest.raises(StorageError) as info:
        store.read_bytes("absent.bin")
    assert str(info.value) == f"s3://{bucket}/p/absent.bin: no such object"
    gone = Store("s3://no-such-bucket-here/p", s3_options, retry=FAST)
    for op in (lambda: gone.read_bytes("a"), lambda: gone.list(), lambda: gone.size("a")):
        with pytest.raises(UserError) as info:
            op()
        assert str(info.value) == "s3://no-such-bucket-here: the bucket does not exist"


def test_wrong_credentials_are_one_line_without_the_secret(s3_options, bucket, monkeypatch):
    Store(f"s3://{bucket}", s3_options).write_bytes("a.bin", b"x")
    for key, secret in [("deepfleet-test", "wrong-secret-1234"), ("unknown-key", SECRET_KEY)]:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        store = Store(f"s3://{bucket}", s3_options, retry=FAST)
        for op in (lambda s=store: s.read_bytes("a.bin"), lambda s=store: s.list()):
            with pytest.raises(UserError) as info:
                op()
            message = str(info.value)
            assert message.startswith(f"s3://{bucket}") and "access denied" in message
            assert "\n" not in message and secret not in message
