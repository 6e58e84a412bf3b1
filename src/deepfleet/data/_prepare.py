"""prepare: a [data] table (or CLI flags) to a folder of verified shards."""

from __future__ import annotations

from pathlib import Path

from deepfleet.config import DataSection
from deepfleet.data._manifest import Manifest
from deepfleet.data._sources import load_source
from deepfleet.data._writer import write_dataset


def prepare_from_config(data: DataSection, out: str | Path, seed: int) -> Manifest:
    samples = load_source(data.source)
    return write_dataset(
        samples, out,
        shards=data.shards,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=seed,
        source={"name": data.source, "description": samples.description},
    )
