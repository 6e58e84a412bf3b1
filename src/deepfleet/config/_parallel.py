from typing import Literal

from pydantic import Field

from deepfleet.config._base import Section


class ParallelSection(Section):
    """[train.parallel]: the degrees of a multi-dimensional layout, one per named dimension
    of the device mesh (pp, dp_replicate, dp_shard, tp). Their product is the number of
    processes. All at their defaults: train.strategy alone decides (the one-dimensional
    shorthand)."""

    pp: int = Field(1, ge=1, description="Pipeline stages (see [train.pipeline]).")
    dp_replicate: int = Field(
        1, ge=1, description="Data-parallel replicas (DDP, or the replicate dim of HSDP)."
    )
    dp_shard: int = Field(
        -1,
        description="Data-parallel ranks that shard parameters (FSDP2); -1: the processes "
        "left over by the other degrees.",
    )
    tp: int = Field(
        1,
        ge=1,
        description="Tensor-parallel ranks: the model's plan splits its linear layers (and "
        "attention heads) over them; must divide the heads.",
    )
    sequence_parallel: bool = Field(
        True,
        description="With tp >= 2: the zoo gpt's plan also cuts the norms and the residual "
        "stream along the sequence (all-gather and reduce-scatter in place of all-reduce: "
        "the same traffic, tp times less activation memory there); tp must divide the "
        "context length. A user's parallelize() decides this itself.",
    )

    def is_default(self) -> bool:
        return (self.pp, self.dp_replicate, self.dp_shard, self.tp) == (1, 1, -1, 1)


class PipelineSection(Section):
    """[train.pipeline]: how the `pipeline` strategy cuts the model and schedules micro-batches."""

    split_points: list[str] = Field(
        default_factory=list,
        description="Where each new pipeline stage begins, in order: top-level children of an "
        "nn.Sequential, or module names of any other model (such as blocks.2); one fewer "
        "than the number of stages (pp x interleave). Empty: an even cut by parameter count.",
    )
    schedule: Literal["gpipe", "1f1b", "interleaved"] = Field(
        "1f1b",
        description="gpipe (all forwards, then all backwards), 1f1b (one forward, one "
        "backward: less activation memory) or interleaved (1F1B over several stages per "
        "rank: a smaller pipeline bubble).",
    )
    interleave: int = Field(
        1,
        ge=1,
        description="Stages each pipeline rank runs, interleaved (the interleaved schedule: "
        "at least 2; rank r runs stages r, r + pp, ...).",
    )
    microbatches: int = Field(
        4, gt=0, description="Micro-batches each batch is cut into; batch_size must divide."
    )


class CheckpointSection(Section):
    """[train.checkpoint]: sharded training checkpoints for resume and restarts."""

    every_steps: int = Field(
        0, ge=0, description="Also checkpoint every N optimizer steps (0: only at phase ends)."
    )
    keep: int = Field(2, gt=0, description="Committed checkpoints kept; older ones are deleted.")
    async_save: bool = Field(
        False,
        description="Write checkpoints in the background (torch.distributed.checkpoint."
        "async_save): training continues once the tensors are copied to CPU memory; each is "
        "committed when written, at the latest before the next one or the end of training.",
    )


class EarlyStoppingSection(Section):
    """[train.early_stopping]: stop when the monitored metric stops improving."""

    patience: int = Field(
        0, ge=0, description="Epochs without improvement before training stops (0: never stop)."
    )
    min_delta: float = Field(
        0.0, ge=0, description="The least change of the monitored metric that counts."
    )


class ProfileSection(Section):
    """[train.profile]: a torch.profiler window over training steps (rank 0 only)."""

    wait: int = Field(1, ge=0, description="Steps skipped before the profiler starts.")
    warmup: int = Field(1, ge=0, description="Steps profiled but not recorded.")
    active: int = Field(3, gt=0, description="Steps recorded in the trace.")
    repeat: int = Field(
        1, ge=0, description="Cycles of wait+warmup+active (0: repeat until training ends)."
    )
