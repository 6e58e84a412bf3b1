"""StreamLoader: a ShardStream under DataLoader workers, cut into batches, resumable exactly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from deepfleet.data._stream import ShardStream, Window
from deepfleet.errors import UserError

# What must match for a saved position to mean the same samples (num_workers need not).
_ORDER_KEYS = ("seed", "world_size", "batch_size", "samples", "uneven", "shuffle",
               "shuffle_buffer")


@dataclass
class _Failure:
    """A user-facing error raised in a worker, carried to the main process as one line."""

    message: str


class _EpochWindows(IterableDataset):
    """The windows of one epoch from one position; a fresh one is handed to each pass."""

    def __init__(self, stream: ShardStream, epoch: int, start_batch: int) -> None:
        super().__init__()
        self.stream, self.epoch, self.start_batch = stream, epoch, start_batch

    def __iter__(self) -> Iterator[Window | _Failure]:
        info = torch.utils.data.get_worker_info()
        worker, count = (info.id, info.num_workers) if info else (0, 1)
        try:
            yield from self.stream.windows(self.epoch, self.start_batch, worker, count)
        except UserError as err:
            yield _Failure(str(err))


class StreamLoader:
    """Batches (x float32, y int64) of a ShardStream; prefetching workers; exact resume.

    The position is counted in batches handed to the consumer. `state_dict()` taken inside
    the loop body, after batch k, restores to a loader that yields batches k+1... of the same
    epoch. A pass that runs to the end leaves the loader at the end of its epoch; the next
    pass replays that epoch unless `set_epoch` chose another (like DistributedSampler).
    `last_ids` holds the sample ids of the batch just yielded.
    """

    def __init__(self, stream: ShardStream, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int = 2) -> None:
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch_factor <= 0:
            raise UserError(f"prefetch_factor must be > 0, got {prefetch_factor}")
        self.stream = stream
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.epoch = 0
        self._position = 0
        self._finished = False
        self.last_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.stream.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (its shard order and shuffle); a new epoch starts at batch 0."""
        if epoch != self.epoch:
            self.epoch, self._position, self._finished = epoch, 0, False

    def state_dict(self) -> dict[str, Any]:
        s = self.stream
        return {"epoch": self.epoch,
                "batches": len(self) if self._finished else self._position,
                "seed": s.seed, "world_size": s.world_size, "batch_size": s.batch_size,
                "samples": s.num_samples, "uneven": s.uneven, "shuffle": s.shuffle,
                "shuffle_buffer": s.shuffle_buffer, "rank": s.rank}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in _ORDER_KEYS:
            if state.get(key) != mine[key]:
                raise UserError(f"cannot resume the data stream: {key} was {state.get(key)!r}, "
                                f"now {mine[key]!r}")
        batches = int(state["batches"])
        if not 0 <= batches <= len(self):
            raise UserError(f"cannot resume the data stream at batch {batches} of {len(self)}")
        self.epoch, self._position, self._finished = int(state["epoch"]), batches, False

    def _windows(self, start: int) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            _EpochWindows(self.stream, self.epoch, start), batch_size=None,
            num_workers=workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
            prefetch_factor=self.prefetch_factor if workers else None,
            # A private generator: starting workers must not draw from the global torch RNG.
            generator=torch.Generator().manual_seed(0))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._finished:
            self._position, self._finished = 0, False
        start = self._position
        if start >= len(self):
            return
        batch = self.stream.batch_size
        self.stream.fill_cache()  # before workers start, so they inherit the decoded shards
        for item in self._windows(start):
            if isinstance(item, _Failure):
                raise UserError(item.message)
            first, ids, x, y = item
            for offset in range(0, len(y), batch):
                self._position = first + offset // batch + 1
                self.last_ids = ids[offset:offset + batch]
                yield x[offset:offset + batch], y[offset:offset + batch]
        self._finished = True
