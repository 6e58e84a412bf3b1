"""Transient failures: the S3 server stopped for a few seconds and started again; a read in
flight retries with backoff, logs once, and returns the right bytes."""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from s3_fixtures import *  # noqa: F403 - the S3 server fixtures

from deepfleet.errors import StorageError
from deepfleet.storage import RetryPolicy, ShardCache, Store, is_transient


def test_a_read_in_flight_survives_a_server_restart(
    s3_server, bucket, s3_options, tmp_path, caplog
):
    store = Store(f"s3://{bucket}/shards", s3_options)
    payload = bytes(range(256)) * 4096  # 1 MiB
    store.write_bytes("part-0.bin", payload)
    store.write_bytes("part-1.bin", payload[::-1])
    cache = ShardCache(store, tmp_path / "cache", limit_bytes=8 << 20)
    results: dict[str, object] = {}

    def read(key: str, op) -> None:
        try:
            results[key] = op()
        except Exception as err:  # noqa: BLE001 - the assertion below shows it
            results[key] = err

    s3_server.stop()
    caplog.set_level(logging.INFO, logger="deepfleet.storage")
    readers = [
        threading.Thread(target=read, args=("bytes", lambda: store.read_bytes("part-0.bin"))),
        threading.Thread(
            target=read,
            args=(
                "cache",
                lambda: cache.fetch("part-1.bin", hashlib.sha256(payload[::-1]).hexdigest()),
            ),
        ),
    ]
    for reader in readers:
        reader.start()
    time.sleep(3)  # both are retrying against a server that is down
    assert all(r.is_alive() for r in readers), results
    s3_server.start()
    for reader in readers:
        reader.join(timeout=60)
    cache.close()
    assert results["bytes"] == payload
    assert results["cache"].read_bytes() == payload[::-1]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # Logged once per operation, however many attempts it took (the cache's size lookup
    # and download are separate operations; one of them met the outage).
    assert 2 <= len(warnings) <= 3, [r.getMessage() for r in warnings]
    assert all("retrying" in r.getMessage() for r in warnings)
    assert any("succeeded after" in r.getMessage() for r in caplog.records)


def test_giving_up_is_one_line(s3_options, bucket, s3_server):
    store = Store(f"s3://{bucket}", s3_options, retry=RetryPolicy(attempts=2, base=0.01))
    s3_server.stop()
    try:
        store.read_bytes("x")
    except StorageError as err:
        message = str(err)
    finally:
        s3_server.start()
    assert message.startswith(f"s3://{bucket}/x: unreachable after 2 attempts")
    assert "\n" not in message


def test_what_counts_as_transient():
    # Messages as pyarrow reports the AWS SDK's errors.
    assert is_transient(
        OSError("AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 7")
    )
    assert is_transient(OSError("AWS Error SLOW_DOWN during PutObject operation: Please reduce"))
    assert is_transient(OSError("AWS Error UNKNOWN (HTTP status 503) during GetObject operation"))
    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    assert not is_transient(OSError("AWS Error ACCESS_DENIED during HeadObject operation"))
    assert not is_transient(FileNotFoundError("Path does not exist 'b/k'"))
    assert not is_transient(ValueError("bad"))
