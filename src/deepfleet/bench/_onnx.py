"""onnxruntime sessions for the inference benchmark (the graph comes from deepfleet.deploy)."""

from __future__ import annotations

from pathlib import Path

import torch

# the benchmark's graph input name (the bundle's is "input")
INPUT = "x"


def ort_providers(device: torch.device) -> list[str] | None:
    """Execution providers for a device, or None when onnxruntime cannot run there."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return None


def ort_session(path: Path, providers: list, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
