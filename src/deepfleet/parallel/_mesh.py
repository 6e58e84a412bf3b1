"""Layouts on the job's DeviceMesh: tensor parallelism (the model's plan on the tp
dimension), FSDP2 over it (dp_shard x tp), HSDP (dp_replicate x dp_shard) and their
combinations, applied in torchtitan's order: tensor parallel, then activation checkpointing
and compiling per block, then sharding."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from deepfleet.parallel._clip import clip_grad_norm
from deepfleet.parallel._strategy import Autocast, Objective, SingleStrategy, blocks_of
from deepfleet.parallel._topology import Topology


class MeshStrategy(SingleStrategy):
    """Any layout of tp, dp_shard and dp_replicate degrees. Ranks of one tensor-parallel group
    read the same batches (the stream is cut by data-parallel rank) and compute the same
    loss; only the group's first rank counts it, so every sample is counted once."""

    def __init__(
        self,
        model: nn.Module,
        topology: Topology,
        rank: int,
        device: torch.device,
        compile_model: bool = False,
        *,
        wrap_blocks: Callable[[nn.Module], None] = lambda model: None,
    ) -> None:
        from torch.distributed.fsdp import fully_shard

        from deepfleet.models import tp_plan

        super().__init__(model, topology, rank, device, compile_model)
        self.name = topology.strategy
        self.mesh = topology.build_mesh(device)
        # Validation runs the whole model on every rank (each its own rows): a plain copy,
        # taken before the plan changes the layers, is loaded with the trained weights.
        self._plain = copy.deepcopy(model) if topology.tp > 1 else None
        if topology.tp > 1:
            plan = tp_plan(model, topology.sequence_parallel)
            assert plan is not None, "build_topology checks that the model has a plan"
            plan.apply(model, self.mesh["tp"])
        wrap_blocks(model)
        self.sharded = topology.dp > 1
        if self.sharded:
            # One dp dimension: plain FSDP; two: HSDP (replicas of shards).
            names = ("dp_replicate", "dp_shard") if topology.dp_replicate > 1 else ("dp_shard",)
            dp_mesh = self.mesh[names]
            for block in blocks_of(model):
                fully_shard(block, mesh=dp_mesh)
            fully_shard(model, mesh=dp_mesh)
        self.owns_outputs = topology.tp_rank(rank) == 0

    def no_sync(self, skip: bool):
        if self.sharded:
            self.module.set_requires_gradient_sync(not skip)
        return super().no_sync(skip)

    def forward_backward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        objective: Objective,
        scale: float,
        autocast: Autocast,
        backward: Callable[[torch.Tensor], None],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        total, output = super().forward_backward(x, y, objective, scale, autocast, backward)
        if not self.owns_outputs:  # the same loss as the group's first rank: count it once
            return torch.zeros_like(total), None
        return total, output

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        return clip_grad_norm(self.trainable(), max_norm)

    def eval_module(self) -> nn.Module:
        if self._plain is None:
            # Sharded only: FSDP gathers the weights itself. Buffers are not sharded and
            # each rank's follow its own batches: evaluate with rank 0's, as FSDPStrategy.
            for buffer in self.module.buffers():
                dist.broadcast(buffer, src=0)
            return self.module
        full = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True))
        self._plain.load_state_dict(full)
        return self._plain

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.module, options=options)
