"""Multi-label classification: a multi-hot vector per sample, binary cross-entropy per label."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deepfleet.errors import UserError
from deepfleet.tasks._numeric import sigmoid
from deepfleet.tasks._protocol import Targets, TaskMetrics

if TYPE_CHECKING:
    import torch
    from torch import nn

THRESHOLD = 0.5  # a label is predicted when its probability reaches this
# mAP on a fixed grid of thresholds: its state is a fixed size, whatever the split size.
MAP_THRESHOLDS = 1001


class MultilabelTask:
    name = "multilabel"
    monitor = "val_f1_macro"
    stratify = False
    output_kind = "logits"

    def __init__(self, targets: Targets | None = None) -> None:
        self.targets = targets

    def encode_targets(self, values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[1] < 1:
            raise UserError(
                f"{where}: multilabel targets must be one 0/1 vector per sample, got "
                f"shape {list(values.shape)}"
            )
        if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
            raise UserError(f"{where}: multilabel targets must be numeric 0/1, got {values.dtype}")
        if not np.isin(values, (0, 1)).all():
            raise UserError(f"{where}: multilabel targets must be 0 or 1 (multi-hot vectors)")
        return values.astype(np.uint8), [str(i) for i in range(values.shape[1])]

    def _labels(self) -> int:
        targets = self.targets
        if targets is None:
            raise UserError(f"task {self.name}: used before its data set is known")
        if len(targets.shape) != 1:
            raise UserError(
                f"task {self.name} needs one multi-hot vector per sample; the data set has "
                f"{targets.describe()} (set task.name to match the data)"
            )
        return targets.shape[0]

    def output_size(self) -> int:
        return self._labels()

    def check(self, output_shape: tuple[int, ...]) -> str | None:
        labels = self._labels()
        if tuple(output_shape[1:]) != (labels,):
            return (
                f"task {self.name} needs model outputs [batch, {labels}] (one logit per "
                f"label); the model gives {list(output_shape)}"
            )
        return None

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional  # torch only when training: prepare never imports it

        return functional.binary_cross_entropy_with_logits(
            output.float(), target.float(), reduction="sum"
        )

    def count(self, target: torch.Tensor) -> int:
        return target.numel()

    def running(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def metrics(self) -> TaskMetrics:
        import torch
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

        from deepfleet.tasks._meters import StreamMetrics

        labels = self._labels()
        collection = MetricCollection(
            {
                "f1_micro": MultilabelF1Score(labels, threshold=THRESHOLD, average="micro"),
                "f1_macro": MultilabelF1Score(labels, threshold=THRESHOLD, average="macro"),
                "map": MultilabelAveragePrecision(
                    labels, average="macro", thresholds=MAP_THRESHOLDS
                ),
            }
        )
        return StreamMetrics(
            self.loss, self.count, collection, lambda o, t: (torch.sigmoid(o), t.long())
        )

    def export_head(self, model: nn.Module) -> nn.Module:
        return model

    def columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        probs = sigmoid(outputs.astype(np.float32))
        names = self.targets.names if self.targets else []
        out: dict[str, np.ndarray] = {}
        for i, name in enumerate(names):
            out[f"prob_{name}"] = probs[:, i]
        for i, name in enumerate(names):
            out[f"label_{name}"] = (probs[:, i] >= THRESHOLD).astype(np.int8)
        return out
