"""Regression: one or several float outputs per sample. The model learns standardised
targets (the training split's mean and std, recorded in the manifest); metrics, exports and
predictions are in the targets' own units."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from deepfleet.errors import UserError
from deepfleet.tasks._protocol import Targets, TaskMetrics

if TYPE_CHECKING:
    import torch
    from torch import nn


def target_stats(y: np.ndarray) -> dict[str, list[float]]:
    """Per-output mean and std of a split's targets (std 1 where an output is constant)."""
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    std = y.std(axis=0) if len(y) else np.ones(y.shape[1])
    return {
        "mean": (y.mean(axis=0) if len(y) else np.zeros(y.shape[1])).tolist(),
        "std": np.where(std > 0, std, 1.0).tolist(),
    }


class RegressionTask:
    name = "regression"
    monitor = "val_loss"
    stratify = False
    output_kind = "values"

    def __init__(self, targets: Targets | None = None) -> None:
        self.targets = targets
        if targets is not None and "mean" in targets.stats:
            import torch  # only with a data set's targets: preparing one needs no torch

            self._mean = torch.tensor(targets.stats["mean"], dtype=torch.float32)
            self._std = torch.tensor(targets.stats["std"], dtype=torch.float32)

    def encode_targets(self, values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
        values = np.asarray(values)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or not (
            np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)
        ):
            raise UserError(
                f"{where}: regression targets must be one number (or a vector of numbers) per "
                f"sample, got {values.dtype} of shape {list(values.shape)}"
            )
        values = values.astype(np.float32)
        if not np.isfinite(values).all():
            raise UserError(f"{where}: regression targets must be finite (found NaN or Inf)")
        return values, [str(i) for i in range(values.shape[1])]

    def _outputs(self) -> int:
        targets = self.targets
        if targets is None:
            raise UserError(f"task {self.name}: used before its data set is known")
        if len(targets.shape) != 1 or not np.issubdtype(np.dtype(targets.dtype), np.floating):
            raise UserError(
                f"task {self.name} needs float targets (one vector per sample); the data set "
                f"has {targets.describe()} (set task.name to match the data)"
            )
        if "mean" not in targets.stats:
            raise UserError(f"task {self.name}: the data set records no target statistics")
        return targets.shape[0]

    def output_size(self) -> int:
        return self._outputs()

    def check(self, output_shape: tuple[int, ...]) -> str | None:
        outputs = self._outputs()
        if tuple(output_shape[1:]) != (outputs,):
            return (
                f"task {self.name} needs model outputs [batch, {outputs}] (one value per "
                f"target); the model gives {list(output_shape)}"
            )
        return None

    def _standard(self, target: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean.to(target.device), self._std.to(target.device)
        return (target.float() - mean) / std

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional

        return functional.mse_loss(output.float(), self._standard(target), reduction="sum")

    def count(self, target: torch.Tensor) -> int:
        return target.numel()

    def running(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def values(self, output: torch.Tensor) -> torch.Tensor:
        """Model outputs in the targets' units."""
        return output.float() * self._std.to(output.device) + self._mean.to(output.device)

    def metrics(self) -> TaskMetrics:
        from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

        from deepfleet.tasks._meters import StreamMetrics

        outputs = self._outputs()
        collection = MetricCollection(
            {
                "mse": MeanSquaredError(num_outputs=outputs),
                "mae": MeanAbsoluteError(num_outputs=outputs),
                "r2": R2Score(multioutput="uniform_average"),
            }
        )

        def prepare(output: torch.Tensor, target: torch.Tensor):
            values, target = self.values(output), target.float()
            return (values, target) if outputs > 1 else (values[:, 0], target[:, 0])

        return StreamMetrics(
            self.loss, self.count, collection, prepare, lambda f: {"rmse": math.sqrt(f["mse"])}
        )

    def export_head(self, model: nn.Module) -> nn.Module:
        from deepfleet.tasks._destandardise import Destandardise

        stats = self.targets.stats if self.targets else {}
        return Destandardise(model, stats["mean"], stats["std"])

    def columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        names = self.targets.names if self.targets else []
        if len(names) == 1:
            return {"value": outputs[:, 0].astype(np.float32)}
        return {f"value_{name}": outputs[:, i].astype(np.float32) for i, name in enumerate(names)}
