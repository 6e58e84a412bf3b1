import warnings
from typing import Any, Literal

from pydantic import Field, model_validator

from deepfleet.config._base import Section
from deepfleet.config._parallel import (
    CheckpointSection,
    EarlyStoppingSection,
    ParallelSection,
    PipelineSection,
    ProfileSection,
)

STAGES_DEPRECATED = "train.stages is deprecated: use train.phases (same entries)"


def warn_stages_deprecated() -> None:
    """The one notice for the old name of [[train.phases]], in a job file or a --set key."""
    warnings.warn(STAGES_DEPRECATED, DeprecationWarning, stacklevel=2)


class PhaseSection(Section):
    """One [[train.phases]] entry: a phase of training with its own optimizer settings."""

    name: str = Field("main", min_length=1, description="Shown in logs and metrics.")
    epochs: int = Field(1, gt=0, description="Epochs in this phase.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw or sgd.")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled (adamw) or L2 (sgd) decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    schedule: Literal["constant", "cosine", "step"] = Field(
        "constant", description="LR shape after warm-up, stepped every optimizer step."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from 0 to lr.")
    step_epochs: int = Field(1, gt=0, description="step schedule: epochs between decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor.")
    freeze: list[str] = Field(
        default_factory=list, description="Parameter-name prefixes kept frozen during this phase."
    )


class TrainSection(Section):
    """[train]: batch, precision and the list of phases."""

    batch_size: int = Field(
        64,
        gt=0,
        description="Per data-parallel rank batch size; global batch = batch_size x "
        "data-parallel ranks x accumulation_steps.",
    )
    phases: list[PhaseSection] = Field(
        default_factory=lambda: [PhaseSection()],
        description="Run in order. `stages`, the old name, is still read (with a notice).",
    )
    strategy: Literal["auto", "single", "ddp", "fsdp", "pipeline"] = Field(
        "auto",
        description="single, ddp, fsdp, pipeline, or auto (chosen from the number of "
        "processes and the model size; the reason is logged).",
    )
    parallel: ParallelSection = Field(
        default_factory=ParallelSection,
        description="Degrees of a 2-D/3-D layout (tp, dp_shard, dp_replicate, pp); set them "
        "with strategy = auto.",
    )
    pipeline: PipelineSection = Field(
        default_factory=PipelineSection, description="Settings of the pipeline strategy."
    )
    checkpoint: CheckpointSection = Field(
        default_factory=CheckpointSection, description="Training checkpoints (resume, restarts)."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32, or bf16/fp16 autocast (fp16 adds a gradient scaler on CUDA)."
    )
    tf32: bool = Field(True, description="Allow TF32 matmuls and convolutions on Ampere+ GPUs.")
    compile: bool = Field(False, description="torch.compile the model before training.")
    compile_scope: Literal["model", "blocks"] = Field(
        "model",
        description="What train.compile compiles: the whole model, or each block on its own "
        "(shorter compiles, and the form FSDP and tensor parallelism keep their hooks in).",
    )
    activation_checkpointing: Literal["none", "full"] | int = Field(
        "none",
        description="Recompute activations in the backward pass instead of keeping them: "
        "none, full (every block), or N (every N-th block). Blocks: the model's repeated "
        "top-level layers.",
    )
    channels_last: bool = Field(
        False, description="Keep conv-net weights and 4-D inputs in channels_last layout."
    )
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none",
        description="Scale each phase's lr by (global batch / batch_size): none, linear "
        "or sqrt of that ratio.",
    )
    grad_clip: float | None = Field(None, gt=0, description="Clip the global grad norm.")
    accumulation_steps: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    monitor: str | None = Field(
        None,
        description="The validation metric that picks the best checkpoint, e.g. val_loss, "
        "val_accuracy, val_perplexity, val_r2, val_f1_macro (default: the task's).",
    )
    monitor_mode: Literal["min", "max"] | None = Field(
        None, description="Whether lower (min) or higher (max) is better; from the name if unset."
    )
    early_stopping: EarlyStoppingSection = Field(
        default_factory=EarlyStoppingSection, description="Stop when the monitor stalls."
    )
    eval_batch_size: int = Field(1024, gt=0, description="Rows per validation batch on each rank.")
    log_every: int = Field(10, gt=0, description="Log a step line every N optimizer steps.")
    # None first: the job-file reference lists it as one optional key, not a table array.
    profile: None | ProfileSection = Field(
        None,
        description="A table { wait = 1, warmup = 1, active = 3, repeat = 1 } (steps; active "
        "> 0): profile training steps with torch.profiler on rank 0 into the run's "
        "report/profile/ (a Chrome trace and top_ops.md). Absent: off. See docs/training.md.",
    )

    @model_validator(mode="before")
    @classmethod
    def _stages_is_the_old_name(cls, data: Any) -> Any:
        """[[train.stages]] (before phases had their own name) loads as [[train.phases]]."""
        if not isinstance(data, dict) or "stages" not in data:
            return data
        if "phases" in data:
            raise ValueError("stages and phases: give one (stages is the old name of phases)")
        warn_stages_deprecated()
        data = dict(data)
        data["phases"] = data.pop("stages")
        return data

    @model_validator(mode="after")
    def _at_least_one_phase(self) -> "TrainSection":
        if not self.phases:
            raise ValueError("phases: at least one phase is required")
        if isinstance(self.activation_checkpointing, int) and self.activation_checkpointing < 1:
            raise ValueError("activation_checkpointing: N must be >= 1 (or none, full)")
        return self
