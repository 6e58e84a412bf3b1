"""Streaming metrics shared by the tasks: a mean loss and a torchmetrics collection, both
reduced over ranks by torchmetrics when a process group is up."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchmetrics import Metric, MetricCollection

from deepfleet.tasks._counting import counting


class MeanOf(Metric):
    """sum / count of a loss over every batch (and rank)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("terms", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, total: torch.Tensor, terms: int) -> None:  # type: ignore[override]
        self.total += total.detach().double()
        self.terms += terms

    def compute(self) -> torch.Tensor:
        return self.total / self.terms.clamp(min=1)


class StreamMetrics:
    """The task's loss meter plus a collection fed with `prepare(output, target)`."""

    def __init__(
        self,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        count: Callable[[torch.Tensor], int],
        collection: MetricCollection | None = None,
        prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        | None = None,
        derive: Callable[[dict[str, float]], dict[str, float]] | None = None,
        ratios: dict[str, Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]]]
        | None = None,
    ) -> None:
        self._loss, self._count = loss, count
        self.mean_loss = MeanOf()
        # name -> fn(output, target) giving (a sum, its number of terms): exact means, e.g.
        # accuracy as correct / samples, that need no class count.
        self.ratios = {name: (fn, MeanOf()) for name, fn in (ratios or {}).items()}
        self.collection = collection
        self.prepare = prepare or (lambda o, t: (o, t))
        self.derive = derive
        self._device: torch.device | None = None

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        output = output.float()
        if self._device != output.device:  # states live where the outputs are (NCCL: CUDA)
            self._device = output.device
            self.mean_loss.to(output.device)
            for _, meter in self.ratios.values():
                meter.to(output.device)
            if self.collection is not None:
                self.collection.to(output.device)
        self.mean_loss.update(self._loss(output, target), self._count(target))
        for fn, meter in self.ratios.values():
            meter.update(*fn(output, target))
        if self.collection is not None:
            with counting():
                self.collection.update(*self.prepare(output, target))

    def compute(self) -> dict[str, float]:
        loss = float(self.mean_loss.compute())
        out = {"loss": loss}
        for name, (_, meter) in self.ratios.items():
            out[name] = float(meter.compute())
        if self.collection is not None:
            for name, value in self.collection.compute().items():
                out[name] = float(value.double().mean())  # per-output values: their mean
        if self.derive is not None:
            out.update(self.derive(out))
        return out


def perplexity(figures: dict[str, float]) -> dict[str, float]:
    """exp of the mean token loss."""
    return {"perplexity": math.exp(min(figures["loss"], 700.0))}
