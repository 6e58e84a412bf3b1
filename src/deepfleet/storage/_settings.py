"""Where a node keeps its shard cache and how many bytes it may hold: `data.cache_dir` /
`data.cache_limit` in a job file, $DEEPFLEET_CACHE, or the defaults."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from deepfleet.errors import UserError

DEFAULT_LIMIT = "20GB"
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: int | str) -> int:
    """A byte count from 1000000, "20GB", "512MiB" or "1.5 GB" (SI and binary units)."""
    if isinstance(value, bool):
        raise UserError(f"{value!r} is not a size in bytes")
    if isinstance(value, int):
        count = value
    else:
        found = _SIZE.match(str(value))
        unit = found.group(2).lower() if found else None
        if found is None or unit not in _UNITS:
            raise UserError(f"{value!r} is not a size (e.g. 20GB, 512MiB or a number of bytes)")
        count = int(float(found.group(1)) * _UNITS[unit])
    if count <= 0:
        raise UserError(f"{value!r}: a size must be > 0 bytes")
    return count


def cache_root() -> Path:
    """Everything a node keeps locally: $DEEPFLEET_CACHE, else ~/.cache/deepfleet
    (XDG_CACHE_HOME honoured)."""
    root = os.environ.get("DEEPFLEET_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "deepfleet"


def default_cache_dir() -> Path:
    """The shard cache: shards/ under cache_root()."""
    return cache_root() / "shards"


@dataclass(frozen=True)
class CacheSettings:
    """A node's shard cache: its folder (shared by the ranks of the node) and byte limit."""

    folder: Path
    limit: int

    @classmethod
    def of(cls, folder: str | os.PathLike[str] | None, limit: int | str | None) -> CacheSettings:
        """The settings with defaults filled in for what is None."""
        where = Path(folder).expanduser() if folder else default_cache_dir()
        return cls(where, parse_bytes(DEFAULT_LIMIT if limit is None else limit))
