"""Deployment: bundles (export, load), batch prediction."""

from deepfleet.deploy._bundle import (
    FORMAT,
    MODEL_JSON,
    WEIGHTS,
    LoadedBundle,
    export_bundle,
    load_bundle,
    read_bundle_spec,
    write_spec_file,
)
from deepfleet.deploy._predict import predict_dataset, predict_shard, predictions_table

__all__ = [
    "FORMAT",
    "MODEL_JSON",
    "WEIGHTS",
    "LoadedBundle",
    "export_bundle",
    "load_bundle",
    "predict_dataset",
    "predict_shard",
    "predictions_table",
    "read_bundle_spec",
    "write_spec_file",
]
