"""Data: sources, the shard writer, manifests and their verification, readers.

Names are imported on first use (PEP 562): `deepfleet verify-data` needs the manifest and
hashlib, not torch, so it starts in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepfleet._lazy import lazy_exports

_WHERE = {
    "ImageTransform": "deepfleet.data._augment",
    "model_preprocessing": "deepfleet.data._transforms",
    "normalization": "deepfleet.data._transforms",
    "train_transform": "deepfleet.data._transforms",
    "BUILTIN_SOURCES": "deepfleet.data._sources",
    "DataKey": "deepfleet.data._crypto",
    "KEY_ENV": "deepfleet.data._crypto",
    "MANIFEST_NAME": "deepfleet.data._manifest",
    "Manifest": "deepfleet.data._manifest",
    "Preprocessing": "deepfleet.data._preprocess",
    "SOURCE_KINDS": "deepfleet.data._sources",
    "Samples": "deepfleet.data._samples",
    "ShardEntry": "deepfleet.data._manifest",
    "ShardStream": "deepfleet.data._stream",
    "SourceOptions": "deepfleet.data._sources",
    "SplitArrays": "deepfleet.data._reader",
    "StreamLoader": "deepfleet.data._loader",
    "dataset_key": "deepfleet.data._reader",
    "dataset_problems": "deepfleet.data._manifest",
    "decode_batch": "deepfleet.data._reader",
    "decode_raw": "deepfleet.data._reader",
    "load_data_key": "deepfleet.data._crypto",
    "load_source": "deepfleet.data._sources",
    "load_tokenizer": "deepfleet.data._text",
    "new_data_key": "deepfleet.data._crypto",
    "cache_settings": "deepfleet.data._remote",
    "open_prepared": "deepfleet.data._remote",
    "open_shard": "deepfleet.data._reader",
    "prepare_from_config": "deepfleet.data._prepare",
    "read_manifest": "deepfleet.data._manifest",
    "read_split": "deepfleet.data._reader",
    "scale_features": "deepfleet.data._preprocess",
    "shard_table": "deepfleet.data._writer",
    "stratified_split": "deepfleet.data._split",
    "verify_dataset": "deepfleet.data._manifest",
    "verify_shard": "deepfleet.data._manifest",
    "write_dataset": "deepfleet.data._writer",
}

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from deepfleet.data._augment import ImageTransform
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
    from deepfleet.data._remote import cache_settings, open_prepared
    from deepfleet.data._samples import Samples
    from deepfleet.data._sources import BUILTIN_SOURCES, SOURCE_KINDS, SourceOptions, load_source
    from deepfleet.data._split import stratified_split
    from deepfleet.data._stream import ShardStream
    from deepfleet.data._text import load_tokenizer
    from deepfleet.data._transforms import model_preprocessing, normalization, train_transform
    from deepfleet.data._writer import shard_table, write_dataset

__all__ = [
    "ImageTransform",
    "model_preprocessing",
    "normalization",
    "train_transform",
    "cache_settings",
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
    "open_prepared",
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


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
