"""Which rows each rank trains on: seeded global batches of an in-memory split, each cut into
one share per data-parallel rank. The order depends on the seed and epoch only, never on the
number of ranks, so 2 ranks of batch B/2 see exactly the batches one process of batch B sees."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MicroBatch:
    rows: torch.Tensor     # this rank's row indices
    global_count: int      # samples in the whole optimizer step, over every rank


class RankBatches:
    """Global micro-batches of `batch_size x dp` rows; `accumulation` of them per step.

    drop_last drops a final short micro-batch (pipelines need fixed shapes); a final
    micro-batch too short to give every rank a row is always dropped.
    """

    def __init__(self, rows: int, batch_size: int, dp: int, dp_rank: int, seed: int,
                 accumulation: int = 1, drop_last: bool = False) -> None:
        self.rows, self.dp, self.dp_rank, self.seed = rows, dp, dp_rank, seed
        self.accumulation = accumulation
        self.micro_size = batch_size * dp
        micro = rows // self.micro_size if drop_last else math.ceil(rows / self.micro_size)
        if micro and rows - (micro - 1) * self.micro_size < dp:
            micro -= 1
        self.micro_per_epoch = micro

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_per_epoch / self.accumulation)

    def order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.rows, generator=generator)

    def step(self, order: torch.Tensor, step: int) -> list[MicroBatch]:
        """This rank's micro-batches of optimizer step `step` of an epoch."""
        first = step * self.accumulation
        last = min(first + self.accumulation, self.micro_per_epoch)
        chunks = [order[m * self.micro_size:(m + 1) * self.micro_size] for m in range(first, last)]
        total = sum(len(c) for c in chunks)
        return [MicroBatch(c.tensor_split(self.dp)[self.dp_rank], total) for c in chunks]
