"""A job on encoded images, end to end: prepare keeps the JPEG/PNG bytes, training streams
them with augmentation, evaluation and batch prediction decode them with the bundle's
recorded transform, and the bundle's preprocessing applies to raw file bytes."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from _image_folders import colour_folder

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.deploy import load_bundle
from deepfleet.jobs import run_job


@pytest.mark.slow
@pytest.mark.e2e
def test_an_encoded_image_job_trains_evaluates_exports_and_predicts(tmp_path):
    files = colour_folder(tmp_path / "images", per_class=30)
    job = job_from_dict(
        tiny_job_dict(
            tmp_path,
            data={
                "source": str(tmp_path / "images"),
                "image_format": "encoded",
                "image_size": [16, 16],
                "val_fraction": 0.2,
                "test_fraction": 0.2,
                "augment": {"brightness": 0.1, "mean": [0.5, 0.5, 0.5], "std": [0.25] * 3},
            },
            model={"name": "mlp", "params": {"hidden": [32]}},
            train={"batch_size": 8},
            export={"onnx": False},
        )
    )
    summary = run_job(job)
    assert summary.metrics["accuracy"] >= 0.9  # red against blue: learnt through the crops
    bundle = load_bundle(summary.paths.bundle)
    prep = bundle.preprocessing
    assert prep.image == {"mode": "RGB", "size": [16, 16], "resize_ratio": 256 / 224}
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.25, 0.25, 0.25)
    # The bundle's preprocessing turns raw file bytes into the model's input.
    paths = list(files.values())
    raw = np.array([paths[0].read_bytes(), paths[-1].read_bytes()], dtype=object)
    x = prep.apply(raw)
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float32
    assert x[0, 2].mean() > x[0, 0].mean() and x[1, 0].mean() > x[1, 2].mean()
    pixels = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16)).astype(np.uint8)
    expected = (pixels.astype(np.float32) * np.float32(1 / 255) - 0.5) / 0.25
    assert np.allclose(prep.apply(pixels), expected, atol=1e-5)  # decoded pixels pass through
    written = [pq.read_table(p) for p in summary.paths.predictions.rglob("*.parquet")]
    assert summary.predicted_rows > 0 and sum(t.num_rows for t in written) > 0
