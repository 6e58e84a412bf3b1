"""Backends agree: torch eager, torch compiled and onnxruntime, within BACKEND_TOLERANCE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepfleet.data import read_split
from deepfleet.deploy import load_bundle
from deepfleet.deploy._backends import BACKEND_TOLERANCE, make_backend
from deepfleet.errors import UserError
from deepfleet.evaluate import predict_proba


@pytest.fixture(scope="module")
def test_x(trained_run) -> np.ndarray:
    return read_split(trained_run.data_dir(), "test").x.numpy()


def test_onnxruntime_agrees_with_torch_and_with_evaluation(trained_run, test_x):
    bundle = load_bundle(trained_run.bundle)
    eager = make_backend(bundle, "torch", "cpu")(test_x)
    ort = make_backend(bundle, "onnxruntime", "cpu")(test_x)
    np.testing.assert_allclose(ort, eager, atol=BACKEND_TOLERANCE, rtol=0)
    # Independent path: the evaluation stage's own inference loop on the same weights.
    probs = predict_proba(bundle.model, torch.from_numpy(test_x), torch.device("cpu"))
    np.testing.assert_array_equal(ort.argmax(1), probs.numpy().argmax(1))


def test_unknown_backend_and_missing_cuda_are_user_errors(trained_run):
    bundle = load_bundle(trained_run.bundle)
    with pytest.raises(UserError, match="expected one of"):
        make_backend(bundle, "tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            make_backend(bundle, "torch", "cuda")


@pytest.mark.slow
def test_compiled_torch_agrees_with_eager(trained_run, test_x):
    bundle = load_bundle(trained_run.bundle)
    eager = make_backend(bundle, "torch", "cpu")(test_x)
    compiled = make_backend(load_bundle(trained_run.bundle), "torch", "cpu", compiled=True)
    for rows in (len(test_x), 7):  # dynamic batch: a second size needs no new graph
        np.testing.assert_allclose(
            compiled(test_x[:rows]), eager[:rows], atol=BACKEND_TOLERANCE, rtol=0
        )


@pytest.mark.gpu
def test_cuda_backends_agree_with_cpu(trained_run, test_x):
    """A bundle written on one device loads on another: CPU-exported weights on CUDA."""
    cpu = make_backend(load_bundle(trained_run.bundle), "torch", "cpu")(test_x)
    gpu = make_backend(load_bundle(trained_run.bundle, "cuda"), "torch", "cuda")(test_x)
    np.testing.assert_allclose(gpu, cpu, atol=BACKEND_TOLERANCE, rtol=0)
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        ort = make_backend(load_bundle(trained_run.bundle), "onnxruntime", "cuda")(test_x)
        np.testing.assert_allclose(ort, cpu, atol=BACKEND_TOLERANCE, rtol=0)
