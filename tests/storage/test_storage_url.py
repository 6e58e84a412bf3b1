"""URLs to file systems: local, s3://, fsspec; credentials refused in options; URLs printed
without secrets."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from deepfleet.errors import UserError
from deepfleet.storage import redact, resolve


def test_local_paths_and_file_urls(tmp_path):
    for url in (tmp_path, str(tmp_path), f"file://{tmp_path}"):
        loc = resolve(url)
        assert isinstance(loc.fs, pafs.LocalFileSystem)
        assert loc.path == str(tmp_path) and not loc.is_s3


def test_s3_urls_take_settings_from_options():
    loc = resolve(
        "s3://shards/mnist/", {"endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1"}
    )
    assert isinstance(loc.fs, pafs.S3FileSystem) and loc.is_s3
    assert loc.path == "shards/mnist" and loc.url == "s3://shards/mnist"
    assert loc.fs.region == "eu-west-1"
    assert loc.join("part-0.parquet") == "shards/mnist/part-0.parquet"


def test_other_schemes_go_through_fsspec():
    loc = resolve("memory://bucket/x")
    assert isinstance(loc.fs, pafs.PyFileSystem)
    with loc.fs.open_output_stream(loc.join("a")) as out:
        out.write(b"hi")
    assert loc.fs.open_input_stream(loc.join("a")).read() == b"hi"


@pytest.mark.parametrize(
    "option", ["key", "secret", "token", "aws_secret_access_key", "Secret_Key"]
)
def test_credentials_in_options_are_refused_in_one_line(option):
    with pytest.raises(UserError) as info:
        resolve("s3://b/p", {option: "AKIASECRETVALUE", "endpoint_url": "http://127.0.0.1:9"})
    message = str(info.value)
    assert option in message and "environment" in message
    assert "AKIASECRETVALUE" not in message and "\n" not in message


def test_bad_options_are_one_line():
    with pytest.raises(UserError, match="unknown S3 storage option 'endpoint'"):
        resolve("s3://b/p", {"endpoint": "x"})
    with pytest.raises(UserError, match="expected http"):
        resolve("s3://b/p", {"endpoint_url": "127.0.0.1:9"})
    with pytest.raises(UserError, match="expected s3://BUCKET"):
        resolve("s3:///p")
    with pytest.raises(UserError, match="not a local path"):
        resolve("/tmp/x", {"region": "x"})
    with pytest.raises(UserError, match="nosuchscheme://"):
        resolve("nosuchscheme://x/y")


def test_redact_drops_user_password_and_query():
    assert redact("s3://AKIA:SECRET@bucket/p?X-Amz-Signature=abc") == "s3://bucket/p"
    assert redact("https://u:p@host:9000/x?token=t") == "https://host:9000/x"
    assert redact("/local/path") == "/local/path"
