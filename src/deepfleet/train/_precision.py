"""Numeric settings of a run: autocast dtype, TF32, memory layout."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_factory(
    precision: str, device: torch.device
) -> Callable[[], contextlib.AbstractContextManager]:
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def configure_tf32(enabled: bool, device: torch.device) -> bool:
    """TF32 matmuls/convolutions on Ampere (sm 8.0) and newer; returns whether it is on."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] < 8:
        return False
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled


def to_channels_last(model: nn.Module) -> nn.Module:
    """Conv nets run faster in NHWC on tensor cores; 4-D weights are converted, others kept."""
    return model.to(memory_format=torch.channels_last)
