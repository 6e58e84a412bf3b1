"""The bundle: ONNX graph checked at export, versions, digest, and strict layout checks."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _deploy_helpers import copy_bundle

from deepfleet.config import ModelSection
from deepfleet.data import read_manifest, read_split
from deepfleet.deploy import (
    MODEL_JSON,
    ONNX_FILE,
    ONNX_TOLERANCE,
    WEIGHTS,
    export_bundle,
    load_bundle,
    read_bundle_spec,
)
from deepfleet.errors import UserError
from deepfleet.models import cnn


def test_bundle_holds_onnx_versions_and_data_digest(trained_run):
    spec = read_bundle_spec(trained_run.bundle)
    assert set(spec["files"]) == {WEIGHTS, ONNX_FILE, "job.toml", "metrics.json"}
    assert spec["onnx"]["max_abs_diff"] <= spec["onnx"]["tolerance"] == ONNX_TOLERANCE
    assert spec["onnx"]["opset"] >= 17
    assert spec["versions"]["torch"] == torch.__version__
    assert spec["versions"]["onnxruntime"] == ort.__version__
    assert "cuda" in spec["versions"] and spec["versions"]["deepfleet"]
    assert spec["data_manifest_sha256"] == read_manifest(trained_run.data_dir()).digest()


def test_onnx_graph_matches_torch_on_real_data_and_any_batch(trained_run):
    bundle = load_bundle(trained_run.bundle)
    x = read_split(trained_run.data_dir(), "test").x.numpy()
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    for rows in (1, 5, len(x)):
        got = session.run(None, {"input": x[:rows]})[0]
        with torch.no_grad():
            expected = bundle.model(torch.from_numpy(x[:rows])).numpy()
        np.testing.assert_allclose(got, expected, atol=ONNX_TOLERANCE, rtol=0)


def test_export_refuses_a_graph_outside_tolerance(tmp_path):
    with pytest.raises(UserError, match="disagrees with PyTorch"):
        export_bundle(
            cnn((1, 8, 8), 3),
            tmp_path / "b",
            name="m",
            model_section=ModelSection(name="cnn"),
            input_shape=(1, 8, 8),
            class_names=["a", "b", "c"],
            onnx_tolerance=-1.0,
        )
    assert not (tmp_path / "b").exists()  # nothing half-written


def test_bundle_without_onnx(tmp_path):
    out = export_bundle(
        cnn((1, 8, 8), 3),
        tmp_path / "b",
        name="m",
        model_section=ModelSection(name="cnn"),
        input_shape=(1, 8, 8),
        class_names=["a", "b", "c"],
        onnx=False,
    )
    assert load_bundle(out).onnx_path is None


@pytest.mark.parametrize(
    "damage, message",
    [
        ("change", "does not match its sha256"),
        ("remove", "missing model.onnx"),
        ("add", "unexpected file extra.bin"),
        ("folder", "unexpected folder sub"),
        ("symlink", "symlink"),
        ("escape", "leaves the bundle"),
    ],
)
def test_damaged_bundles_are_refused(trained_run, tmp_path, damage, message):
    root = copy_bundle(trained_run.bundle, tmp_path / "bundle")
    if damage == "change":
        data = bytearray((root / ONNX_FILE).read_bytes())
        data[-1] ^= 1
        (root / ONNX_FILE).write_bytes(bytes(data))
    elif damage == "remove":
        (root / ONNX_FILE).unlink()
    elif damage == "add":
        (root / "extra.bin").write_bytes(b"x")
    elif damage == "folder":
        (root / "sub").mkdir()
    elif damage == "symlink":
        target = tmp_path / "elsewhere.toml"
        target.write_bytes((root / "job.toml").read_bytes())
        (root / "job.toml").unlink()
        (root / "job.toml").symlink_to(target)  # same bytes, so only the link is wrong
    elif damage == "escape":
        spec = json.loads((root / MODEL_JSON).read_text())
        spec["files"]["../outside.toml"] = spec["files"].pop("job.toml")
        (root / MODEL_JSON).write_text(json.dumps(spec))
    with pytest.raises(UserError, match=message):
        load_bundle(root)
