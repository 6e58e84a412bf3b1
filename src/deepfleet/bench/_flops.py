"""Model FLOPs from torch.utils.flop_counter (matmuls, convolutions, attention).

Only the ops torch's counter knows are counted: elementwise work, normalisation and the optimizer
add little and are left out, as in the usual definition of model FLOPs utilisation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

_aten = torch.ops.aten


def _register_cpu_attention() -> None:
    """Teach the counter the CPU flash-attention kernels, which it does not know (torch 2.13).

    The formulas are torch's own for the CUDA kernels; the CPU kernels do the same maths.
    """
    forward = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(_aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None and forward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(forward)
        def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    if backward is not None and backward not in flop_counter.flop_registry:

        @flop_counter.register_flop_formula(backward)
        def _backward(
            grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
        ):
            return flop_counter.sdpa_backward_flop_count(
                grad_out_shape, query_shape, key_shape, value_shape
            )


_register_cpu_attention()


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Floating-point operations (a multiply-add is 2) that fn(*args) performs."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


def train_step_flops(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> int:
    """FLOPs of one forward and backward pass; gradients are cleared afterwards."""

    def step() -> None:
        loss_fn(model(x), y).backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops


def forward_flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return count_flops(model, x)
