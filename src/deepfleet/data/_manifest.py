"""manifest.json: what a prepared data set holds, and the checksums that prove it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfleet._atomic import read_json, sha256_file
from deepfleet.data._preprocess import Preprocessing
from deepfleet.errors import UserError

if TYPE_CHECKING:
    from deepfleet.data._remote import RemoteData
    from deepfleet.storage import CacheSettings
    from deepfleet.tasks import Targets

MANIFEST_NAME = "manifest.json"
FORMAT = "deepfleet.shards/2"
TOKEN_IDS = "token_ids"  # features.encoding of a text source's samples
IMAGE = "image"  # features.encoding of encoded images (JPEG / PNG / WebP bytes)
_READABLE = (FORMAT, "deepfleet.shards/1")  # /1 stored x as Arrow's fixed_shape_tensor


@dataclass(frozen=True)
class ShardEntry:
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest.json; `root` is the folder that holds it (a Path), or the URL of a
    remote data set (a str, with `remote` to read it through)."""

    root: Path | str
    raw: dict[str, Any]
    # Shards whose bytes this reader has checked (each is hashed once per reader, when it is
    # first opened); a copy sent to a worker process checks again on its own.
    verified: set[str] = field(default_factory=set, compare=False, repr=False)
    remote: RemoteData | None = field(default=None, compare=False, repr=False)

    def where(self, name: str) -> str:
        """The printable path or URL of a file of the data set."""
        return f"{self.root}/{name}" if self.remote else str(Path(self.root) / name)

    @property
    def class_names(self) -> list[str]:
        return list(self.raw["class_names"])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.raw["features"]["shape"])

    @property
    def feature_dtype(self) -> str:
        return self.raw["features"]["dtype"]

    @property
    def scale(self) -> float:
        return float(self.raw["features"]["scale"])

    @property
    def tokens(self) -> bool:
        """Whether samples are token ids (a text source): model input is int64(raw)."""
        return self.raw["features"].get("encoding") == TOKEN_IDS

    @property
    def preprocessing(self) -> Preprocessing:
        """How the stored (raw) samples become model input."""
        return Preprocessing.for_samples(
            self.feature_dtype, self.scale, self.sample_shape, tokens=self.tokens, image=self.image
        )

    @property
    def image(self) -> dict[str, Any] | None:
        """For shards of encoded images: the mode (L or RGB), the size [H, W] they are
        decoded to and the evaluation resize ratio; None for plain tensors."""
        features = self.raw["features"]
        if features.get("encoding") != IMAGE:
            return None
        return {
            "mode": features["mode"],
            "size": list(self.sample_shape[1:]),
            "resize_ratio": float(features.get("resize_ratio", 256 / 224)),
        }

    @property
    def task(self) -> str:
        """The task the targets were encoded for (data sets before tasks: classification)."""
        return str(self.raw.get("task", "classification"))

    @property
    def targets(self) -> Targets:
        """What the targets are: dtype, per-sample shape, names, training-split statistics."""
        from deepfleet.tasks import Targets  # imports torch: not at start-up (verify-data)

        if "targets" in self.raw:
            return Targets.from_json(self.raw["targets"])
        return Targets("int64", (), self.class_names, {})

    def file_bytes(self, name: str) -> bytes:
        """A file the data set carries besides its shards (e.g. tokenizer.json), checked
        against the sha256 the manifest records for it."""
        digest = self._file_digest(name)
        if self.remote is not None:
            data = self.remote.read_bytes(name)
        else:
            try:
                data = (Path(self.root) / name).read_bytes()
            except OSError as err:
                raise UserError(f"{self.where(name)}: cannot be read ({err.strerror})") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise UserError(f"{self.where(name)}: does not match its sha256 in the manifest")
        return data

    def file_path(self, name: str) -> Path:
        """A local file holding `name` (see file_bytes), checked against its sha256: the
        data set's own file, or for a remote data set a copy in the node's cache (verified
        when it arrived; not held, so copy it soon)."""
        if self.remote is None:
            self.file_bytes(name)
            return Path(self.root) / name
        return self.remote.cache.fetch(name, self._file_digest(name))

    def _file_digest(self, name: str) -> str:
        """The sha256 the manifest records for a file it carries besides its shards."""
        digest = self.raw.get("files", {}).get(name)
        if digest is None:
            raise UserError(f"{self.root}: the data set has no {name}")
        return digest

    @property
    def splits(self) -> list[str]:
        return list(self.raw["splits"])

    def shards(self, split: str) -> list[ShardEntry]:
        if split not in self.raw["splits"]:
            raise UserError(f"{self.root}: no split {split!r} (has {', '.join(self.splits)})")
        return [ShardEntry(**s) for s in self.raw["splits"][split]["shards"]]

    @property
    def encryption(self) -> dict[str, Any] | None:
        """{"algorithm", "key_id"} when the shards are encrypted, else None."""
        return self.raw.get("encryption")

    def rows(self, split: str) -> int:
        return int(self.raw["splits"][split]["rows"])

    def digest(self) -> str:
        if self.remote is not None:
            return hashlib.sha256(self.remote.read_bytes(MANIFEST_NAME)).hexdigest()
        return sha256_file(Path(self.root) / MANIFEST_NAME)


DIGEST = "digest"


def canonical_bytes(raw: dict[str, Any]) -> bytes:
    """The manifest's content as the digest covers it: every key but the digest itself, in
    one canonical JSON form, so re-indenting the file changes nothing but an edit does."""
    body = {k: v for k, v in raw.items() if k != DIGEST}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def sealed(raw: dict[str, Any], authenticate=None) -> dict[str, Any]:
    """`raw` with its digest: the sha256 of its canonical bytes and, for encrypted data sets,
    `authenticate(bytes)` (an HMAC under the data key) that only the key holder can make."""
    body = canonical_bytes(raw)
    digest = {"sha256": hashlib.sha256(body).hexdigest()}
    if authenticate is not None:
        digest["hmac_sha256"] = authenticate(body)
    return {**raw, DIGEST: digest}


def _check_digest(path: Path | str, raw: dict[str, Any]) -> None:
    digest = raw.get(DIGEST)
    if not isinstance(digest, dict) or not isinstance(digest.get("sha256"), str):
        raise UserError(
            f"{path}: has no digest (written by hand or by an older deepfleet); "
            "prepare the data set again"
        )
    if hashlib.sha256(canonical_bytes(raw)).hexdigest() != digest["sha256"]:
        raise UserError(f"{path}: does not match its own digest (edited after it was written)")
    for split, part in raw["splits"].items():
        counted = sum(int(s["rows"]) for s in part["shards"])
        if counted != int(part["rows"]):
            raise UserError(
                f"{path}: split {split} has {part['rows']} rows but its shards add up to {counted}"
            )


def read_manifest(
    folder: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    cache: CacheSettings | None = None,
) -> Manifest:
    """Open a prepared data set (a folder, or a URL such as s3://bucket/prefix); a clear
    error when it is not one, or when its manifest was edited (its digest no longer matches).

    For a URL, `storage_options` are the [data] storage_options (endpoint, region, ...) and
    `cache` the node's shard cache (default: $DEEPFLEET_CACHE or ~/.cache/deepfleet)."""
    from deepfleet.storage import is_remote

    if is_remote(folder):
        return _read_remote(os.fspath(folder), storage_options, cache)
    root = Path(folder)  # a local folder: storage options (a job's, for its URLs) do not apply
    if not root.exists():
        raise UserError(f"{folder}: data path does not exist")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{folder}: not a prepared data set (no {MANIFEST_NAME})")
    return Manifest(root.resolve(), _checked(path, read_json(path)))


def _checked(path: Path | str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict) or raw.get("format") not in _READABLE:
        got = raw.get("format") if isinstance(raw, dict) else None
        raise UserError(f"{path}: unknown manifest format {got!r}")
    _check_digest(path, raw)
    return raw


def _read_remote(
    url: str, options: Mapping[str, Any] | None, cache: CacheSettings | None
) -> Manifest:
    from deepfleet.data._remote import RemoteData
    from deepfleet.errors import StorageError

    remote = RemoteData(url, options, cache)
    try:
        data = remote.read_bytes(MANIFEST_NAME)
    except StorageError as err:
        if err.cause == "no such object":
            raise UserError(f"{remote.url}: not a prepared data set (no {MANIFEST_NAME})") from None
        raise
    where = f"{remote.url}/{MANIFEST_NAME}"
    try:
        raw = json.loads(data)
    except ValueError:
        raise UserError(f"{where}: not valid JSON") from None
    return Manifest(remote.url, _checked(where, raw), remote=remote)


def shard_problem(manifest: Manifest, entry: ShardEntry) -> str | None:
    """What is wrong with one shard (missing, or bytes changed), or None."""
    if manifest.remote is not None:
        return manifest.remote.problem(manifest, entry)
    path = Path(manifest.root) / entry.file
    if not path.is_file():
        return f"shard {entry.file} is missing from {manifest.root}"
    if sha256_file(path) != entry.sha256:
        return f"shard {entry.file} does not match its sha256 in the manifest"
    if not manifest.encryption:  # an encrypted footer is checked by the reader, with the key
        import pyarrow.parquet as pq

        return rows_problem(entry, pq.read_metadata(path).num_rows)
    return None


def rows_problem(entry: ShardEntry, footer_rows: int) -> str | None:
    """A shard whose Parquet footer disagrees with the manifest's row count, or None."""
    if footer_rows != entry.rows:
        return f"shard {entry.file} holds {footer_rows} rows but the manifest says {entry.rows}"
    return None


def verify_shard(manifest: Manifest, entry: ShardEntry) -> None:
    """Raise UserError naming the shard when it is missing or its bytes changed; a shard this
    manifest's reader has checked already is not hashed again."""
    if entry.file in manifest.verified:
        return
    problem = shard_problem(manifest, entry)
    if problem:
        raise UserError(problem)
    manifest.verified.add(entry.file)


def dataset_problems(manifest: Manifest) -> list[str]:
    """Every shard of every split checked; one line per bad shard."""
    return [
        p
        for split in manifest.splits
        for e in manifest.shards(split)
        if (p := shard_problem(manifest, e))
    ]


def verify_dataset(
    folder: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> Manifest:
    """Check every shard of every split against the manifest; the first bad one is named.
    Remote shards are hashed as they stream past (nothing is cached)."""
    manifest = read_manifest(folder, storage_options)
    problems = dataset_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return manifest
