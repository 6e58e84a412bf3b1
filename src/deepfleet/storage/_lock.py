"""An exclusive or shared lock on a file (fcntl.flock): between the processes of one node,
and between threads that open the lock file separately (flock belongs to the open file)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[int]:
    """Hold a lock on `path` (created if absent) for the block; yields the descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)  # closing releases the lock


def try_exclusive(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting; False when someone holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
