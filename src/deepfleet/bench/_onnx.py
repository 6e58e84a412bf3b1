"""A workload's model as ONNX (torch.onnx, dynamo exporter) with a dynamic batch dimension.

Kept minimal on purpose: this file exists to benchmark onnxruntime, not to ship models.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from deepfleet._atomic import write_bytes_atomic

INPUT, OUTPUT = "x", "logits"


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Export an eval-mode copy of `model` for inputs shaped like `example` (any batch size)."""
    model = model.eval().to("cpu")
    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter warns about every missing optional pkg
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(model, (example.to("cpu"),), dynamo=True,
                                    dynamic_shapes=({0: batch},), input_names=[INPUT],
                                    output_names=[OUTPUT], verbose=False)
    tmp = Path(path).with_suffix(".tmp.onnx")
    program.save(str(tmp))
    write_bytes_atomic(Path(path), tmp.read_bytes())
    tmp.unlink()
    return Path(path)


def ort_providers(device: torch.device) -> list[str] | None:
    """Execution providers for a device, or None when onnxruntime cannot run there."""
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}),
                "CPUExecutionProvider"]
    return None


def ort_session(path: Path, providers: list, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)
