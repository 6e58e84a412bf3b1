"""Causal language modelling: token sequences in, the next token at every position out.

Shards hold x = tokens[0:L] and label = tokens[1:L+1] of packed, fixed-length sequences; the
loss is the cross-entropy summed over every target token, so each token weighs the same."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deepfleet.errors import UserError
from deepfleet.tasks._protocol import Targets, TaskMetrics

if TYPE_CHECKING:
    import torch
    from torch import nn


class CausalLMTask:
    name = "causal_lm"
    monitor = "val_loss"
    stratify = False
    output_kind = "token_logits"

    def __init__(self, targets: Targets | None = None) -> None:
        self.targets = targets

    def encode_targets(self, values: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
        values = np.asarray(values)
        if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
            raise UserError(
                f"{where}: causal_lm targets must be integer token sequences, got "
                f"{values.dtype} of shape {list(values.shape)}"
            )
        return values.astype(np.int32), []

    def vocab_size(self) -> int:
        targets = self.targets
        if targets is None:
            raise UserError(f"task {self.name}: used before its data set is known")
        if (
            len(targets.shape) != 1
            or not np.issubdtype(np.dtype(targets.dtype), np.integer)
            or "vocab_size" not in targets.stats
        ):
            raise UserError(
                f"task {self.name} needs token sequences with a vocabulary (prepare "
                f"text:PATH); the data set has {targets.describe()}"
            )
        return int(targets.stats["vocab_size"])

    def output_size(self) -> int:
        return self.vocab_size()

    def check(self, output_shape: tuple[int, ...]) -> str | None:
        length, vocab = self.targets.shape[0], self.vocab_size()
        if tuple(output_shape[1:]) != (length, vocab):
            return (
                f"task {self.name} needs model outputs [batch, {length}, {vocab}] (next-token "
                f"logits at every position); the model gives {list(output_shape)}"
            )
        return None

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        from torch.nn import functional  # torch only when training: prepare never imports it

        return functional.cross_entropy(
            output.float().flatten(0, -2), target.long().flatten(), reduction="sum"
        )

    def count(self, target: torch.Tensor) -> int:
        return target.numel()

    def running(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def metrics(self) -> TaskMetrics:
        from deepfleet.tasks._meters import StreamMetrics, perplexity

        return StreamMetrics(self.loss, self.count, derive=perplexity)

    def export_head(self, model: nn.Module) -> nn.Module:
        return model

    def columns(self, outputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"next_token": outputs[:, -1].argmax(-1).astype(np.int64)}
