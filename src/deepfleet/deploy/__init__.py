"""Deployment: bundles (export, load, sign, verify), backends, batch prediction, text
generation, serving."""

from deepfleet.deploy._backends import BACKENDS, choose_backend, make_backend
from deepfleet.deploy._bundle import (
    FORMAT,
    MODEL_JSON,
    SIGNATURE,
    TOKENIZER,
    WEIGHTS,
    LoadedBundle,
    export_bundle,
    load_bundle,
    read_bundle_spec,
)
from deepfleet.deploy._generate import generate
from deepfleet.deploy._onnx import ONNX_FILE, ONNX_TOLERANCE, export_onnx
from deepfleet.deploy._predict import predict_dataset, predict_shard
from deepfleet.deploy._predict_files import predict_files
from deepfleet.deploy._signing import new_signing_key, open_bundle, sign_bundle, verify_bundle

__all__ = [
    "BACKENDS",
    "FORMAT",
    "MODEL_JSON",
    "ONNX_FILE",
    "ONNX_TOLERANCE",
    "SIGNATURE",
    "TOKENIZER",
    "WEIGHTS",
    "LoadedBundle",
    "choose_backend",
    "export_bundle",
    "export_onnx",
    "generate",
    "load_bundle",
    "make_backend",
    "new_signing_key",
    "open_bundle",
    "predict_dataset",
    "predict_files",
    "predict_shard",
    "read_bundle_spec",
    "sign_bundle",
    "verify_bundle",
]
