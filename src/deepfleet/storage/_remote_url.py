"""Whether a path names a remote file system: asked at start-up, so it imports nothing."""

from __future__ import annotations

import os
from urllib.parse import urlsplit


def is_remote(url: str | os.PathLike[str]) -> bool:
    """Whether `url` names a remote file system (s3://, gs://, ...) rather than a local path
    or a file:// URL (a one-letter scheme is a Windows drive)."""
    scheme = urlsplit(os.fspath(url)).scheme
    return len(scheme) > 1 and scheme != "file"
