"""Data: sources, the shard writer, manifests and their verification, readers."""

from deepfleet.data._crypto import KEY_ENV, DataKey, load_data_key, new_data_key
from deepfleet.data._loader import StreamLoader
from deepfleet.data._manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    dataset_problems,
    read_manifest,
    verify_dataset,
    verify_shard,
)
from deepfleet.data._prepare import prepare_from_config
from deepfleet.data._preprocess import Preprocessing, scale_features
from deepfleet.data._reader import (
    SplitArrays,
    dataset_key,
    decode_batch,
    decode_raw,
    open_shard,
    read_split,
)
from deepfleet.data._samples import Samples
from deepfleet.data._sources import BUILTIN_SOURCES, SOURCE_KINDS, SourceOptions, load_source
from deepfleet.data._split import stratified_split
from deepfleet.data._stream import ShardStream
from deepfleet.data._text import load_tokenizer
from deepfleet.data._writer import shard_table, write_dataset

__all__ = [
    "BUILTIN_SOURCES",
    "KEY_ENV",
    "MANIFEST_NAME",
    "DataKey",
    "Manifest",
    "Preprocessing",
    "SOURCE_KINDS",
    "Samples",
    "ShardEntry",
    "ShardStream",
    "SourceOptions",
    "SplitArrays",
    "StreamLoader",
    "dataset_key",
    "dataset_problems",
    "decode_batch",
    "decode_raw",
    "load_data_key",
    "load_source",
    "load_tokenizer",
    "new_data_key",
    "open_shard",
    "prepare_from_config",
    "read_manifest",
    "read_split",
    "scale_features",
    "shard_table",
    "stratified_split",
    "verify_dataset",
    "verify_shard",
    "write_dataset",
]
