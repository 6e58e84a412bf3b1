"""Inference benchmark: both backends over batch sizes; the ONNX graph agrees with torch."""

from __future__ import annotations

import numpy as np
import torch

from deepfleet.bench import InferOptions, bench_infer, synthetic_workload
from deepfleet.bench._onnx import ort_session
from deepfleet.bench._train import TrainOptions, prepare_model

CPU = torch.device("cpu")


def test_both_backends_over_batch_sizes(tmp_path):
    workload = synthetic_workload("cnn")
    opts = InferOptions(batch_sizes=[1, 4], iterations=6, warmup=1)
    rows, notes = bench_infer(workload, CPU, opts, tmp_path)
    assert notes == []
    assert [(r["backend"], r["batch_size"]) for r in rows] == [
        ("torch", 1),
        ("torch", 4),
        ("onnxruntime", 1),
        ("onnxruntime", 4),
    ]
    for r in rows:
        assert r["n"] == 6
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        # throughput: the samples of all timed calls over their summed latency
        expected = r["batch_size"] * 1e3 / r["mean_ms"]
        assert abs(r["samples_per_s"] / expected - 1) < 1e-9

    # The graph onnxruntime timed computes what the torch model computes, at any batch size.
    session = ort_session(tmp_path / "cnn.onnx", ["CPUExecutionProvider"])
    model = prepare_model(workload, CPU, TrainOptions()).eval()
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)
