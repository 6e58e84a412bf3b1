"""Data: sources, the shard writer, manifests and their verification, readers."""

from deepfleet.data._manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    read_manifest,
    verify_dataset,
    verify_shard,
)
from deepfleet.data._prepare import prepare_from_config
from deepfleet.data._reader import SplitArrays, decode_batch, read_split
from deepfleet.data._samples import Samples
from deepfleet.data._sources import BUILTIN_SOURCES, load_source
from deepfleet.data._split import stratified_split
from deepfleet.data._writer import shard_table, write_dataset

__all__ = [
    "BUILTIN_SOURCES",
    "MANIFEST_NAME",
    "Manifest",
    "Samples",
    "ShardEntry",
    "SplitArrays",
    "decode_batch",
    "load_source",
    "prepare_from_config",
    "read_manifest",
    "read_split",
    "shard_table",
    "stratified_split",
    "verify_dataset",
    "verify_shard",
    "write_dataset",
]
