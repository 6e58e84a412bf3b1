"""Atomic writes (a later stage never sees a half-written file or folder) and checked JSON reads."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deepfleet.errors import StorageError, UserError, storage_error


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or new entry in `path` durable (the folder's own metadata)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path, what: str = "valid JSON") -> Any:
    """Parse a JSON file a later stage trusts.

    Bad bytes or bad JSON become one UserError line: "<path>: not <what> (<parser detail>)".
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not {what} ({err})") from None


def _refusal(err: BaseException, final: Path, tmp: Path | None) -> StorageError | None:
    """A file-system refusal as a StorageError that names the final path, not the temporary
    one the operating system saw (a file elsewhere keeps its own name)."""
    refusal = storage_error(err, final)
    if refusal is None:
        return None
    path = refusal.path or str(final)
    if tmp is not None and path.startswith(str(tmp)):
        path = str(final) + path[len(str(tmp)) :]
    elif path.startswith(str(final.parent / f".{final.name}.")):  # the temporary's own name
        path = str(final)
    return StorageError(path, refusal.cause)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, fsync, then rename into place."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as err:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        refusal = _refusal(err, path, tmp)
        if refusal is None:
            raise
        raise refusal from None


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(final: Path, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it is renamed to `final`.

    On any error the temporary folder is removed, so `final` is either absent or complete.
    """
    final = Path(final)
    tmp: Path | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        yield tmp
        if final.exists():
            if not replace:
                raise FileExistsError(f"{final} already exists")
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as err:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        refusal = _refusal(err, final, tmp)
        if refusal is None:
            raise
        raise refusal from None
