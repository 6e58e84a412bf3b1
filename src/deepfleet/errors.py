"""The exception types that mean "the user's input or environment is wrong" (CLI exit 2,
HTTP 4xx), and the one place that turns a file-system refusal into such an error."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input: a bad job file, a missing path, a tampered bundle.

    The message is one line that names the problem; the CLI prints it without a traceback.
    """


class StorageError(UserError):
    """The file system refused a read or write: full, read-only, no permission, no folder.
    The message names the path and the cause."""

    def __init__(self, path: str | Path | None, cause: str) -> None:
        super().__init__(None if path is None else str(path), cause)
        self.path = None if path is None else str(path)
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.path}: {self.cause}" if self.path else self.cause


# Refusals that the user's environment causes and the user can fix; anything else (EIO, a
# bad file descriptor) stays an internal error.
_STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EEXIST,
        errno.ENAMETOOLONG,
        errno.EFBIG,
    }
)


def storage_error(err: BaseException, path: str | Path | None = None) -> StorageError | None:
    """`err` as a StorageError naming its file (else `path`), or None when it is not a
    file-system refusal."""
    if isinstance(err, StorageError):
        return err
    if not isinstance(err, OSError):
        return None
    code = err.errno
    if code is None:  # Arrow's I/O errors carry the code in their text: "[errno 28] ..."
        found = re.search(r"\[errno (\d+)\]", str(err))
        code = int(found.group(1)) if found else None
    if code not in _STORAGE_ERRNOS:
        return None
    where = err.filename if err.filename is not None else path
    cause = err.strerror if err.errno is not None and err.strerror else os.strerror(code)
    return StorageError(where, cause)


@contextmanager
def storage_errors(path: str | Path) -> Iterator[None]:
    """Turn a file-system refusal inside the block into a StorageError; `path` is named
    when the operating system did not say which file it refused."""
    try:
        yield
    except OSError as err:
        converted = storage_error(err, path)
        if converted is None:
            raise
        raise converted from None
