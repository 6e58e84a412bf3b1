"""manifest.json: what a prepared data set holds, and the checksums that prove it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepfleet._atomic import read_json, sha256_file
from deepfleet.errors import UserError

MANIFEST_NAME = "manifest.json"
FORMAT = "deepfleet.shards/2"
_READABLE = (FORMAT, "deepfleet.shards/1")  # /1 stored x as Arrow's fixed_shape_tensor


@dataclass(frozen=True)
class ShardEntry:
    file: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest.json; `root` is the folder that holds it."""

    root: Path
    raw: dict[str, Any]

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
    def splits(self) -> list[str]:
        return list(self.raw["splits"])

    def shards(self, split: str) -> list[ShardEntry]:
        if split not in self.raw["splits"]:
            raise UserError(
                f"{self.root}: no split {split!r} (has {', '.join(self.splits)})")
        return [ShardEntry(**s) for s in self.raw["splits"][split]["shards"]]

    @property
    def encryption(self) -> dict[str, Any] | None:
        """{"algorithm", "key_id"} when the shards are encrypted, else None."""
        return self.raw.get("encryption")

    def rows(self, split: str) -> int:
        return int(self.raw["splits"][split]["rows"])

    def digest(self) -> str:
        return sha256_file(self.root / MANIFEST_NAME)


def read_manifest(folder: str | Path) -> Manifest:
    """Open a prepared data set; a clear error when the folder is not one."""
    root = Path(folder)
    if not root.exists():
        raise UserError(f"{folder}: data path does not exist")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{folder}: not a prepared data set (no {MANIFEST_NAME})")
    raw = read_json(path)
    if raw.get("format") not in _READABLE:
        raise UserError(f"{path}: unknown manifest format {raw.get('format')!r}")
    return Manifest(root.resolve(), raw)


def shard_problem(manifest: Manifest, entry: ShardEntry) -> str | None:
    """What is wrong with one shard (missing, or bytes changed), or None."""
    path = manifest.root / entry.file
    if not path.is_file():
        return f"shard {entry.file} is missing from {manifest.root}"
    if sha256_file(path) != entry.sha256:
        return f"shard {entry.file} does not match its sha256 in the manifest"
    return None


def verify_shard(manifest: Manifest, entry: ShardEntry) -> None:
    """Raise UserError naming the shard when it is missing or its bytes changed."""
    problem = shard_problem(manifest, entry)
    if problem:
        raise UserError(problem)


def dataset_problems(manifest: Manifest) -> list[str]:
    """Every shard of every split checked; one line per bad shard."""
    return [p for split in manifest.splits for e in manifest.shards(split)
            if (p := shard_problem(manifest, e))]


def verify_dataset(folder: str | Path) -> Manifest:
    """Check every shard of every split against the manifest; the first bad one is named."""
    manifest = read_manifest(folder)
    problems = dataset_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)
    return manifest
