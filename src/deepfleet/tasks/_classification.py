"""Single-label classification: one class index per sample, cross-entropy, accuracy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deepfleet.errors import UserError
from deepfleet.tasks._numeric import softmax
from deepfleet.tasks._protocol import Targets, TaskMetrics

if TYPE_CHECKING:
    import torch
    from torch import nn


class ClassificationTask:
    name = "classification"
    monitor = "val_accuracy"
    stratify = True
    output_kind = "logits"

    def __init__(self, targets: Targets | None = None) -> None:
        self.targets = targets

    def encode_targets(self, values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
        return encode_labels(values, where)

    def _bound(self) -> Targets:
        if self.targets is None:
            raise UserError(f"task {self.name}: used before its data set is known")
        return self.targets

    def output_size(self) -> int:
        targets = self._bound()
        if targets.shape != () or not np.issubdtype(np.dtype(targets.dtype), np.integer):
            raise UserError(
                f"task {self.name} needs one class index per sample; the data set has "
                f"{targets.describe()} (set task.name to match the data)"
            )
        return len(targets.names)

    def check(self, output_shape: tuple[int, ...]) -> str | None:
        classes = self.output_size()
        if tuple(output_shape[1:]) != (classes,):
            return (
                f"task {self.name} needs model outputs [batch, {classes}] (one logit per "
                f"class); the model gives {list(output_shape)}"
            )
        return None

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional  # torch only when training: prepare never imports it

        return functional.cross_entropy(output.float(), target, reduction="sum")

    def count(self, target: torch.Tensor) -> int:
        return len(target)

    def running(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": (output.detach().argmax(1) == target).sum()}

    def metrics(self) -> TaskMetrics:
        from deepfleet.tasks._meters import StreamMetrics

        def correct(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
            return (output.argmax(1) == target).sum(), len(target)

        return StreamMetrics(self.loss, self.count, ratios={"accuracy": correct})

    def export_head(self, model: nn.Module) -> nn.Module:
        return model

    def columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        probs = softmax(outputs).astype(np.float32)
        names = self._bound().names
        labels = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
        out: dict[str, np.ndarray] = {
            "label": labels.astype(np.int64),
            "label_name": np.array([names[i] for i in labels], dtype=object),
            "confidence": probs.max(1) if len(probs) else np.zeros(0, np.float32),
        }
        for i, name in enumerate(names):
            out[f"prob_{name}"] = probs[:, i]
        return out


def encode_labels(values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """Labels as int64 class indices plus class names.

    Integer labels keep their values (names "0", "1", ...); any other labels (strings) are
    numbered in sorted order.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise UserError(
            f"{where}: labels must be one value per sample, got shape {list(values.shape)}"
        )
    if np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating):
        _refuse_measurements(values, where)
    if np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_):
        y = values.astype(np.int64)
        if len(y) and y.min() < 0:
            raise UserError(f"{where}: labels must be >= 0, found {int(y.min())}")
        top = int(y.max()) + 1 if len(y) else 0
        return y, [str(i) for i in range(top)]
    if np.issubdtype(values.dtype, np.floating):
        return encode_labels(values.astype(np.int64), where)
    names, y = np.unique(values.astype(str), return_inverse=True)
    return y.astype(np.int64), [str(n) for n in names]


def _refuse_measurements(values: np.ndarray, where: str) -> None:
    """Numbers that are measurements, not class labels: fractions, or whole numbers with many
    distinct values seen a few times each and often once (scikit-learn's diabetes: 214 values
    over 442 samples, 84 of them seen once). Class labels, even stored as floats, repeat."""
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        raise UserError(f"{where}: labels must be finite (found NaN or Inf)")
    distinct, counts = np.unique(values, return_counts=True)
    fractional = np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values))
    if fractional or (len(counts) > 20 and counts.mean() < 5 and (counts == 1).mean() >= 0.1):
        raise UserError(
            f"{where}: {len(distinct)} distinct values ({int((counts == 1).sum())} seen once) "
            "look like a regression target; classification needs class labels (integers or "
            "names, each seen several times)"
        )
