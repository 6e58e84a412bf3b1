"""What each rank trains on, grouped into optimizer steps.

Two sources: a StreamLoader (the shard engine's per-rank stream, what `deepfleet train`
uses), or an in-memory split cut by RankBatches: seeded global batches, each cut into one share
per data-parallel rank. That order depends on the seed and epoch only, never on the number of
ranks, so 2 ranks of batch B/2 see exactly the batches one process of batch B sees."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from deepfleet.data import StreamLoader
from deepfleet.errors import UserError


@dataclass(frozen=True)
class MicroBatch:
    rows: torch.Tensor  # this rank's row indices
    global_count: int  # samples in the whole optimizer step, over every rank


class RankBatches:
    """Global micro-batches of `batch_size x dp` rows; `accumulation` of them per step.

    drop_last drops a final short micro-batch (pipelines need fixed shapes); a final
    micro-batch too short to give every rank a row is always dropped.
    """

    def __init__(
        self,
        rows: int,
        batch_size: int,
        dp: int,
        dp_rank: int,
        seed: int,
        accumulation: int = 1,
        drop_last: bool = False,
    ) -> None:
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
        chunks = [
            order[m * self.micro_size : (m + 1) * self.micro_size] for m in range(first, last)
        ]
        total = sum(len(c) for c in chunks)
        return [MicroBatch(c.tensor_split(self.dp)[self.dp_rank], total) for c in chunks]


Group = tuple[list[tuple[torch.Tensor, torch.Tensor]], int]  # (x, y) micro-batches, global count


class ArrayBatches:
    """Optimizer steps over an in-memory split (RankBatches decides the rows)."""

    def __init__(self, data, plan: RankBatches) -> None:
        self.data, self.plan = data, plan
        self.steps_per_epoch = plan.steps_per_epoch

    def epoch(self, epoch: int, start_step: int) -> Iterator[Group]:
        order = self.plan.order(epoch)
        for step in range(start_step, self.steps_per_epoch):
            micro = self.plan.step(order, step)
            yield (
                [(self.data.x[m.rows], self.data.y[m.rows]) for m in micro],
                micro[0].global_count,
            )

    def reader_state(self) -> dict[str, Any]:
        return {}

    def load_reader_state(self, state: dict[str, Any]) -> None:
        pass


class StreamBatches:
    """Optimizer steps over a StreamLoader (this rank's share of the shards). Every rank
    gets batches of the same size, so the global count is the local one times dp."""

    def __init__(self, loader: StreamLoader, dp: int, accumulation: int, drop_last: bool) -> None:
        self.loader, self.dp, self.accumulation = loader, dp, accumulation
        stream = loader.stream
        micro = len(loader)
        if drop_last and stream.per_rank % stream.batch_size:
            micro -= 1  # the short last batch: pipelines need fixed shapes
        self.micro_per_epoch = micro
        self.steps_per_epoch = math.ceil(micro / accumulation)

    def epoch(self, epoch: int, start_step: int) -> Iterator[Group]:
        self.loader.set_epoch(epoch)
        state = self.loader.state_dict()
        first = start_step * self.accumulation
        self.loader.load_state_dict({**state, "epoch": epoch, "batches": first})
        group: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index, (x, y) in enumerate(self.loader, start=first):
            if index >= self.micro_per_epoch:
                break
            group.append((x, y))
            if len(group) == self.accumulation or index + 1 == self.micro_per_epoch:
                yield group, sum(len(b[1]) for b in group) * self.dp
                group = []

    def reader_state(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_reader_state(self, state: dict[str, Any]) -> None:
        # Checks that seed, world size and batch size still give the same order.
        self.loader.load_state_dict(state)


def batch_source(
    train, batch_size: int, dp: int, dp_rank: int, seed: int, accumulation: int, drop_last: bool
) -> ArrayBatches | StreamBatches:
    if isinstance(train, StreamLoader):
        if train.stream.batch_size != batch_size:
            raise UserError(
                f"train.batch_size is {batch_size} but the training stream reads batches of "
                f"{train.stream.batch_size}"
            )
        return StreamBatches(train, dp, accumulation, drop_last)
    return ArrayBatches(
        train, RankBatches(len(train), batch_size, dp, dp_rank, seed, accumulation, drop_last)
    )
