"""Strategies apply parallelism from outside the model: single, ddp, fsdp (pipeline lives in
_pipeline.py). Each exposes the same small interface to the training loop."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.nn.parallel import DistributedDataParallel

from deepfleet.parallel._topology import Topology

Autocast = Callable[[], contextlib.AbstractContextManager]
# The task's training objective: (model output, target) -> its sum over the micro-batch.
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The units FSDP shards one at a time: the top-level children that hold parameters
    (a Sequential's layers, a ResNet's blocks)."""
    return [child for child in model.children() if any(True for _ in child.parameters())]


class SingleStrategy:
    """One process; also the base the other strategies override."""

    name = "single"

    def __init__(
        self,
        model: nn.Module,
        topology: Topology,
        rank: int,
        device: torch.device,
        compile_model: bool = False,
    ) -> None:
        self.full_model = model
        self.module = model  # parameters this rank trains, with their original names
        self.topology = topology
        self.rank = rank
        self.device = device
        self.compile_model = compile_model
        self.train_model: nn.Module = model
        self.owns_outputs = True  # this rank sees outputs (pipeline: only the last stage)

    @property
    def distributed(self) -> bool:
        return self.topology.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over every rank of the job, in place (nothing to do in a single process)."""
        if self.distributed:
            dist.all_reduce(tensor)
        return tensor

    def union(self, names: list[str]) -> list[str]:
        """Every name any rank holds, sorted: ranks that see no outputs (pipeline stages
        before the last) hold fewer sums, and a reduction needs the same list everywhere."""
        if not self.distributed:
            return sorted(names)
        every: list[list[str] | None] = [None] * self.topology.world_size
        dist.all_gather_object(every, sorted(names))
        return sorted({n for found in every for n in found or []})

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.distributed:
            dist.broadcast(tensor, src=src)
        return tensor

    def setup_phase(self) -> None:
        """Called when a training phase starts (after freezing changed requires_grad)."""
        self.train_model = self._maybe_compile(self.module)

    def _maybe_compile(self, module: nn.Module) -> nn.Module:
        return torch.compile(module) if self.compile_model else module

    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient sync on accumulation micro-steps."""
        return contextlib.nullcontext()

    def forward_backward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        objective: Objective,
        scale: float,
        autocast: Autocast,
        backward: Callable[[torch.Tensor], None],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward and backward of one micro-batch. `objective(output, target)` is the
        task's sum over the micro-batch; the backward pass takes it times `scale`, so every
        term of the global batch weighs the same. Returns (the sum, the output), detached;
        the output is None on a rank that does not see it (pipeline: all but the last)."""
        with autocast():
            output = self.train_model(x)
            total = objective(output, y)
        backward(total * scale)
        return total.detach(), output.detach()

    def trainable(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        return nn.utils.clip_grad_norm_(self.trainable(), max_norm)

    def eval_module(self) -> nn.Module:
        """A module that computes the whole model's output on this rank (collective)."""
        return self.module

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The complete weights with their original names; collective, filled on rank 0."""
        return self.module.state_dict()


class DDPStrategy(SingleStrategy):
    """Replicas on every rank; gradients averaged by DistributedDataParallel."""

    name = "ddp"

    def setup_phase(self) -> None:
        # DDP records which parameters need gradients when it is built, so a phase that
        # freezes or unfreezes layers gets a fresh wrapper (it re-broadcasts rank 0's weights).
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.module, device_ids=ids)
        self.train_model = self._maybe_compile(self.ddp)

    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        return self.ddp.no_sync() if skip else contextlib.nullcontext()


class FSDPStrategy(SingleStrategy):
    """FSDP2: every block's parameters sharded over the ranks, gathered just in time."""

    name = "fsdp"

    def __init__(
        self,
        model: nn.Module,
        topology: Topology,
        rank: int,
        device: torch.device,
        compile_model: bool = False,
    ) -> None:
        from torch.distributed.fsdp import fully_shard  # public since torch 2.6

        super().__init__(model, topology, rank, device, compile_model)
        for block in blocks_of(model):
            fully_shard(block)
        fully_shard(model)

    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        self.module.set_requires_gradient_sync(not skip)
        return contextlib.nullcontext()

    def eval_module(self) -> nn.Module:
        # FSDP neither shards nor syncs buffers: each rank's BatchNorm statistics follow its
        # own batches. Every rank evaluates with rank 0's, the ones weights and checkpoints
        # keep, so each evaluates the same model (and a resumed run the same as before).
        for buffer in self.module.buffers():
            dist.broadcast(buffer, src=0)
        return self.module

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.module, options=options)


def fp16_scaler(strategy: SingleStrategy, enabled: bool) -> torch.amp.GradScaler:
    """The gradient scaler for fp16 on CUDA; FSDP's sharded gradients need the sharded one."""
    if enabled and (isinstance(strategy, FSDPStrategy) or getattr(strategy, "sharded", False)):
        from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

        return ShardedGradScaler("cuda")
    return torch.amp.GradScaler("cuda", enabled=enabled)
