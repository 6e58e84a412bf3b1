"""ONNX export (torch's dynamo exporter), checked against PyTorch; bundles and the bench use it.

The batch axis is dynamic, so one graph serves batch 1 and batch 4096 alike. The check runs
onnxruntime on random inputs at several batch sizes and refuses the export when any logit
differs from PyTorch's by more than `ONNX_TOLERANCE` (absolute) — a graph that silently
disagrees with the trained model must never reach a bundle.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepfleet._atomic import write_bytes_atomic
from deepfleet.errors import UserError

ONNX_FILE = "model.onnx"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# fp32 CPU kernels of two runtimes differ by rounding only; 1e-4 absolute on logits is far
# above that noise (~1e-6) and far below any real disagreement (a wrong op, a wrong weight).
ONNX_TOLERANCE = 1e-4
CHECK_BATCHES = (1, 3, 64)


def random_input(
    batch: int,
    input_shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    vocab: int | None = None,
) -> torch.Tensor:
    """Random model input: N(0, 1) floats, or token ids in [0, vocab) when `vocab` is given."""
    if vocab is None:
        return torch.randn(batch, *input_shape, generator=generator)
    return torch.randint(0, vocab, (batch, *input_shape), generator=generator)


def _quiet_export(model: nn.Module, example: torch.Tensor, path: Path, input_name: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    # The exporter logs about optional operator libraries (torchvision) and deprecations;
    # none of it concerns the user, whose model either exports and passes the check or not.
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[input_name],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    if program is None:
        raise UserError("ONNX export produced no graph")
    # save to a side name first: a later stage must never open a half-written graph
    tmp = path.with_suffix(".tmp.onnx")
    try:
        program.save(str(tmp))
        write_bytes_atomic(path, tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def export_onnx(
    model: nn.Module,
    path: Path,
    input_shape: tuple[int, ...],
    tolerance: float = ONNX_TOLERANCE,
    seed: int = 0,
    *,
    vocab: int | None = None,
    input_name: str = INPUT_NAME,
    check: bool = True,
) -> dict[str, Any]:
    """Write `model` as ONNX at `path` (batch axis dynamic) and return the export record.

    Inputs are float features of `input_shape`, or token ids below `vocab` when it is given.
    With `check`, onnxruntime must agree with PyTorch within `tolerance` at several batch
    sizes or the export is refused; without it the record has no check figures.
    """
    import onnxruntime as ort

    path = Path(path)
    model = model.to("cpu").eval()
    generator = torch.Generator().manual_seed(seed)
    example = random_input(2, input_shape, generator, vocab=vocab)
    try:
        _quiet_export(model, example, path, input_name)
    except UserError:
        raise
    except Exception as err:  # the exporter raises many types; the user needs the first line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"the model cannot be exported to ONNX: {first}") from None
    record: dict[str, Any] = {
        "file": path.name,
        "input": input_name,
        "output": OUTPUT_NAME,
        "opset": _opset(path),
    }
    if not check:
        return record
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = scaled = 0.0
    for batch in CHECK_BATCHES:
        x = random_input(batch, input_shape, generator, vocab=vocab)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([OUTPUT_NAME], {input_name: x.numpy()})[0]
        if got.shape != expected.shape:
            raise UserError(
                f"ONNX graph returns shape {list(got.shape)} for batch {batch}, "
                f"PyTorch {list(expected.shape)}"
            )
        diff = np.abs(got - expected)
        worst = max(worst, float(np.max(diff)))
        # fp32 rounding grows with the value: outputs in a target's units (a regression's
        # hundreds) are compared relative to their size, logits (mostly |x| < 1) absolutely.
        scaled = max(scaled, float(np.max(diff / np.maximum(1.0, np.abs(expected)))))
    if not scaled <= tolerance:
        raise UserError(
            f"ONNX graph disagrees with PyTorch: max |diff| / max(1, |value|) {scaled:.3g} > "
            f"tolerance {tolerance:g}"
        )
    return {
        **record,
        "checked_batches": list(CHECK_BATCHES),
        "max_abs_diff": worst,
        "max_scaled_diff": scaled,
        "tolerance": tolerance,
    }


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))
