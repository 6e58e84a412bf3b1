"""`train.strategy = auto`: a layout from the number of processes, the model's size and the
device's memory, with the reason in words (logged at setup)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deepfleet.config import TrainSection

# Weights, gradients and two AdamW moments in fp32: 16 bytes per parameter.
_BYTES_PER_PARAM = 16
# Without a GPU to measure, replicas above this many parameters are sharded.
_CPU_FSDP_PARAMS = 100_000_000
# Tensor parallelism stays within one node's fast links: at most 8 ways.
_MAX_TP = 8


def _layout(name: str, **degrees: int) -> dict[str, Any]:
    return {"name": name, "degrees": degrees}


def choose_layout(
    train: TrainSection, world_size: int, model: nn.Module, device: torch.device
) -> tuple[dict[str, Any], str]:
    """The layout for `auto` and why: one process; a pipeline when split points are set;
    replicas when the training state fits half a device; else sharded over every rank;
    else (on GPUs, for a model with a tensor-parallel plan) sharded over tensor-parallel
    groups as well, the smallest tp that fits."""
    if world_size == 1:
        return _layout("single"), "one process"
    if train.pipeline.split_points:
        return _layout("pipeline"), "train.pipeline.split_points is set"
    params = sum(p.numel() for p in model.parameters())
    need = params * _BYTES_PER_PARAM
    if device.type != "cuda":
        if params > _CPU_FSDP_PARAMS:
            return _layout("fsdp"), f"{params:,} parameters exceed {_CPU_FSDP_PARAMS:,}; sharding"
        return _layout("ddp"), f"{params:,} parameters fit in every process; replicating"
    budget = torch.cuda.get_device_properties(device).total_memory // 2
    gib = need / 2**30
    if need <= budget:
        return _layout("ddp"), (
            f"{params:,} parameters ({gib:.2f} GiB of training state) fit on every GPU; replicating"
        )
    if need / world_size <= budget:
        return _layout("fsdp"), (
            f"{params:,} parameters need ~{gib:.1f} GiB for weights, grads and optimizer "
            f"state, over half of one GPU; sharding over {world_size}"
        )
    return _tensor_parallel(model, world_size, params, gib, train.parallel.sequence_parallel)


def _tensor_parallel(
    model: nn.Module, world_size: int, params: int, gib: float, sequence_parallel: bool = False
) -> tuple[dict[str, Any], str]:
    """Sharded state alone still leaves too little memory for activations: split the layers
    too, when the model's plan allows (the smallest tp that divides world and heads, and the
    sequence when sequence parallel is on)."""
    from deepfleet.errors import UserError
    from deepfleet.models import tp_plan

    plan = tp_plan(model, sequence_parallel)
    why = f"{params:,} parameters (~{gib:.1f} GiB of state) do not fit even sharded"
    if plan is not None:
        for tp in range(2, min(_MAX_TP, world_size) + 1):
            if world_size % tp:
                continue
            try:
                plan.check(model, tp)
            except UserError:
                continue
            name = "fsdp+tp" if world_size > tp else "tp"
            return _layout(name, tp=tp), f"{why}; tensor parallel over {tp}, sharded over the rest"
    return _layout("fsdp"), f"{why}, and the model has no tensor-parallel plan; sharding"
