"""A URL or path to a file system and a path in it: local, s3://, or anything fsspec reads.

Everything comes back as a pyarrow file system, which Parquet reads natively. s3:// uses
pyarrow's own S3 client (the AWS C++ SDK): credentials come only from the standard places
the SDK looks (AWS_* environment variables, ~/.aws config and credential files, web
identity, instance and container roles). Options carry settings (endpoint, region,
timeouts), never credentials: a key in a job file ends up in run folders, logs and
manifests.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from deepfleet.errors import UserError

# Option names that would carry a credential, in the spellings of s3fs, botocore and pyarrow.
SECRET_OPTIONS = frozenset(
    {
        "key",
        "secret",
        "token",
        "password",
        "access_key",
        "secret_key",
        "session_token",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    }
)
S3_OPTIONS = ("endpoint_url", "region", "connect_timeout", "request_timeout")


def redact(url: str) -> str:
    """`url` without user, password or query string (presigned URLs carry signatures)."""
    parts = urlsplit(url)
    if not parts.scheme or len(parts.scheme) == 1:  # a local path (or a Windows drive)
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class Location:
    """Where a URL points: the file system, the path in it, and the URL safe to print."""

    fs: pafs.FileSystem
    path: str
    url: str

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    def join(self, name: str) -> str:
        """The path of `name` (a relative, slash-separated name) under this location."""
        return f"{self.path.rstrip('/')}/{name.lstrip('/')}" if name else self.path


def credential_problem(options: Mapping[str, Any]) -> str | None:
    """Why these options are refused (one names a credential), or None."""
    secret = sorted(k for k in options if k.lower() in SECRET_OPTIONS)
    if not secret:
        return None
    return (
        f"storage option {secret[0]!r} would put a credential in the job file; set "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, a profile in ~/.aws, "
        "or an instance role instead"
    )


def _check_options(url: str, options: Mapping[str, Any]) -> None:
    problem = credential_problem(options)
    if problem:
        raise UserError(f"{redact(url)}: {problem}")


def _s3(url: str, options: Mapping[str, Any]) -> Location:
    unknown = sorted(set(options) - set(S3_OPTIONS))
    if unknown:
        raise UserError(
            f"{redact(url)}: unknown S3 storage option {unknown[0]!r} "
            f"(known: {', '.join(S3_OPTIONS)})"
        )
    parts = urlsplit(url)
    if not parts.netloc:
        raise UserError(f"{redact(url)}: expected s3://BUCKET/PREFIX")
    kwargs: dict[str, Any] = {
        # One attempt per request: deepfleet's own retry backs off and logs (retry.py).
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        "region": options.get("region")
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        "connect_timeout": float(options.get("connect_timeout", 5)),
        "request_timeout": float(options.get("request_timeout", 60)),
    }
    # The AWS SDKs' standard variables, when the options name no endpoint: one setting
    # points every stage (and every child process) at the same server.
    endpoint = (
        options.get("endpoint_url")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        ep = urlsplit(str(endpoint))
        if ep.scheme not in ("http", "https") or not ep.netloc:
            raise UserError(
                f"endpoint_url {redact(str(endpoint))!r}: expected http(s)://HOST[:PORT]"
            )
        kwargs |= {"scheme": ep.scheme, "endpoint_override": ep.netloc.rpartition("@")[2]}
    path = f"{parts.netloc}{parts.path}".rstrip("/")
    return Location(pafs.S3FileSystem(**kwargs), path, redact(url).rstrip("/"))


def resolve(url: str | os.PathLike[str], options: Mapping[str, Any] | None = None) -> Location:
    """The file system and path for a local path, file://, s3:// or any fsspec URL.

    `options` are `data.storage_options`-style settings; for s3:// `endpoint_url` (e.g.
    http://127.0.0.1:8333 for a local server), `region`, `connect_timeout`,
    `request_timeout`. Without `endpoint_url`, $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL
    (the AWS SDKs' standard variables) name the endpoint. Credentials in options are refused
    with one line.
    """
    text = os.fspath(url)
    options = dict(options or {})
    _check_options(text, options)
    scheme = urlsplit(text).scheme
    if scheme == "s3":
        return _s3(text, options)
    if not scheme or len(scheme) == 1 or scheme == "file":
        path = urlsplit(text).path if scheme == "file" else text
        if options:
            raise UserError(f"{text}: storage options apply to remote URLs, not a local path")
        return Location(pafs.LocalFileSystem(), os.path.abspath(path), os.path.abspath(path))
    try:
        from fsspec.core import url_to_fs
    except ImportError:  # pragma: no cover - fsspec ships with the data stack
        raise UserError(f"{redact(text)}: the {scheme}:// scheme needs fsspec") from None
    try:
        fs, path = url_to_fs(text, **options)
    except (ImportError, ValueError) as err:
        raise UserError(f"{redact(text)}: {scheme}:// is not readable here ({err})") from None
    return Location(pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path, redact(text))
