"""Validation and evaluation over a split read in batches: each rank takes its own part of
the split, the task's metrics reduce across ranks (torchmetrics), and memory is bounded by
a batch, never the split.

Every rank runs the same number of equally sized batches (a sharded model's forward is a
collective), so the last rank's part is padded with rows from the start of the split; those
rows go through the model but not into the metrics, so each sample counts exactly once."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Protocol

import torch
from torch import nn

from deepfleet.data import SplitArrays, StreamLoader

# (x, y, real): a batch and how many of its leading rows are real samples, not padding
EvalBatch = tuple[torch.Tensor, torch.Tensor, int]


class Sink(Protocol):
    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...


def _real_rows(samples: int, rank: int, per_rank: int, batch: int, index: int) -> int:
    """Rows of batch `index` of `rank` that hold real samples (positions below `samples`)."""
    owned = min(max(samples - rank * per_rank, 0), per_rank)
    return min(max(owned - index * batch, 0), batch)


def split_batches(
    data: SplitArrays | StreamLoader, rank: int = 0, world_size: int = 1, batch_size: int = 1024
) -> Iterator[EvalBatch]:
    """This rank's batches of a split held in memory (cut here) or streamed (a StreamLoader
    over an unshuffled ShardStream with uneven="pad", already cut by its rank)."""
    if isinstance(data, StreamLoader):
        stream = data.stream
        data.set_epoch(0)
        for index, (x, y) in enumerate(data):
            real = _real_rows(
                stream.num_samples, stream.rank, stream.per_rank, stream.batch_size, index
            )
            yield x, y, real
        return
    total = len(data)
    per_rank = math.ceil(total / world_size)
    for index, start in enumerate(range(0, per_rank, batch_size)):
        positions = torch.arange(start, min(start + batch_size, per_rank)) + rank * per_rank
        rows = positions % total  # past the end: padding from the start of the split
        yield data.x[rows], data.y[rows], _real_rows(total, rank, per_rank, batch_size, index)


@torch.no_grad()
def run_split(
    model: nn.Module, batches: Iterable[EvalBatch], sinks: list[Sink], device: torch.device
) -> int:
    """Feed every real row's model output and target to each sink (eval mode, no autocast:
    metrics in fp32). Returns the number of real rows this rank saw."""
    model.eval()
    seen = 0
    for x, y, real in batches:
        output = model(x.to(device, non_blocking=True))
        if real:
            target = y[:real].to(device, non_blocking=True)
            for sink in sinks:
                sink.update(output[:real].float(), target)
            seen += real
    return seen
