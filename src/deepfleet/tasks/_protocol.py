"""The Task protocol: what changes between jobs (classification, multi-label, regression, a
causal language model, or the user's own). A task owns the loss, the metrics, the metric to
monitor, how targets are stored and checked, and the outputs a bundle gives. Everything else
(strategies, the loop, the shard engine) is the same for every task."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Targets:
    """What a data set's targets are, as manifest.json records them: the stored dtype, the
    per-sample shape (() for one class index), the names of the classes, labels or outputs,
    and statistics of the training split a task may use (a regression's mean and std)."""

    dtype: str = "int64"
    shape: tuple[int, ...] = ()
    names: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Targets:
        return cls(
            str(data["dtype"]),
            tuple(int(s) for s in data["shape"]),
            [str(n) for n in data.get("names", [])],
            dict(data.get("stats", {})),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "names": list(self.names),
            "stats": dict(self.stats),
        }

    def describe(self) -> str:
        shape = "one value" if not self.shape else f"shape {list(self.shape)}"
        return f"{self.dtype} targets of {shape}"


@runtime_checkable
class TaskMetrics(Protocol):
    """Metrics over one split, fed batch by batch; compute() syncs across ranks."""

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, float]: ...


@runtime_checkable
class Task(Protocol):
    """A job's task. `loss` returns a sum and `count` how many terms it holds, so every sample
    (or token) weighs the same over ranks and accumulation steps; a task's count per sample
    is constant (the trainer derives the global count from the samples of a step)."""

    name: str
    monitor: str  # the metric that picks the best checkpoint, e.g. "val_accuracy"
    stratify: bool  # whether splits are drawn stratified by the (class) targets
    output_kind: str  # what the bundle's output holds, e.g. "logits", "values"

    def encode_targets(self, values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
        """A source's targets as stored in shards, and their names; UserError if unfit."""
        ...

    def output_size(self) -> int:
        """The model factory's num_classes argument (classes, labels, outputs, vocabulary)."""
        ...

    def check(self, output_shape: tuple[int, ...]) -> str | None:
        """Why a model output of `output_shape` (one batch of 2) does not fit, or None."""
        ...

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def count(self, target: torch.Tensor) -> int: ...

    def running(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sums over the batch's samples reported with the training loss (e.g. correct)."""
        ...

    def metrics(self) -> TaskMetrics: ...

    def export_head(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module a bundle exports: the model plus what turns its output into the
        task's output (e.g. a regression's de-standardisation)."""
        ...

    def columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        """Named per-sample values of exported outputs, for predictions and the server."""
        ...


def direction(metric: str) -> str:
    """Whether a larger value of `metric` is better ("max") or worse ("min")."""
    lowered = ("loss", "perplexity", "mse", "rmse", "mae")
    return "min" if metric.removeprefix("val_").removeprefix("train_") in lowered else "max"
