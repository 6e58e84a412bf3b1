"""StreamLoader: a ShardStream under DataLoader workers, cut into batches, resumable exactly.

The DataLoader underneath asks for windows by (epoch, window, batches to skip): a small
sampler in this process turns the loader's epoch and position into that list each pass, so
the workers can stay alive across epochs (persistent workers keep their open shards and
decoded row groups) and still follow set_epoch and load_state_dict.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from deepfleet.data._stream import ShardStream, Window
from deepfleet.errors import UserError

# glibc's malloc maps anything larger afresh from the kernel on each call (its mmap threshold
# stops growing there), so every such batch is faulted in page by page.
_MALLOC_REUSE_LIMIT = 32 << 20

# What must match for a saved position to mean the same samples (num_workers need not).
_ORDER_KEYS = ("seed", "world_size", "batch_size", "samples", "uneven", "shuffle", "shuffle_buffer")
# order="global": the world size, batch size and accumulation may change as long as every
# optimizer step still holds the same number of samples.
_GLOBAL_KEYS = ("seed", "step_samples", "samples", "uneven", "shuffle", "shuffle_buffer")


@dataclass
class _Failure:
    """A user-facing error raised in a worker, carried to the main process as one line."""

    message: str


class _Windows(Dataset):
    """Map-style view of a stream: (epoch, window, skip) -> that window's tensors."""

    def __init__(self, stream: ShardStream) -> None:
        self.stream = stream

    def __getitem__(self, key: tuple[int, ...]) -> Window | _Failure:
        try:
            return self.stream.read_window(*key)
        except UserError as err:
            return _Failure(str(err))


@dataclass
class _Cursor:
    """Where a loader stands: its epoch and the batches of it already handed out."""

    epoch: int = 0
    position: int = 0
    finished: bool = False  # the last pass ran to the end of the epoch

    def move(self, epoch: int, position: int) -> None:
        # In place: the DataLoader's sampler holds this very object.
        self.epoch, self.position, self.finished = epoch, position, False


class _Plan(Sampler):
    """The windows (or parts of windows) still to read in the cursor's epoch, from its
    position.

    It holds the cursor, not the loader: no reference cycle, so dropping a StreamLoader
    stops its workers at once rather than at the next garbage collection.
    """

    def __init__(self, stream: ShardStream, cursor: _Cursor) -> None:
        self.stream, self.cursor = stream, cursor

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        s, epoch = self.stream, self.cursor.epoch
        first, skip = divmod(self.cursor.position, s.window_batches)
        for index in range(first, s.num_windows):
            start = skip if index == first else 0
            if s.decode_batches is None:
                yield epoch, index, start
                continue
            # Encoded images: the window in parts of decode_batches batches, one per item,
            # so every worker decodes (the batches and their order are the same).
            count = min(s.window_batches, s.num_batches - index * s.window_batches)
            for part in range(start, count, s.decode_batches):
                yield epoch, index, part, s.decode_batches

    def __len__(self) -> int:
        return self.stream.num_windows


class StreamLoader:
    """Batches (x float32, y int64) of a ShardStream; prefetching workers; exact resume.

    The position is counted in batches handed to the consumer. `state_dict()` taken inside
    the loop body, after batch k, restores to a loader that yields batches k+1... of the same
    epoch. A pass that runs to the end leaves the loader at the end of its epoch; the next
    pass replays that epoch unless `set_epoch` chose another (like DistributedSampler).
    `last_ids` holds the sample ids of the batch just yielded. Workers persist across epochs;
    `close()` stops them (they also stop when the loader is garbage collected).
    """

    def __init__(
        self,
        stream: ShardStream,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        if num_workers < 0:
            raise UserError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch_factor <= 0:
            raise UserError(f"prefetch_factor must be > 0, got {prefetch_factor}")
        self.stream = stream
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self._cursor = _Cursor()
        self._loader: DataLoader | None = None
        self.last_ids: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.stream.num_batches

    @property
    def epoch(self) -> int:
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (its shard order and shuffle); a new epoch starts at batch 0."""
        if epoch != self._cursor.epoch:
            self._cursor.move(epoch, 0)

    def state_dict(self) -> dict[str, Any]:
        s, c = self.stream, self._cursor
        return {
            "epoch": c.epoch,
            "batches": len(self) if c.finished else c.position,
            "seed": s.seed,
            "world_size": s.world_size,
            "batch_size": s.batch_size,
            "samples": s.num_samples,
            "uneven": s.uneven,
            "shuffle": s.shuffle,
            "shuffle_buffer": s.shuffle_buffer,
            "rank": s.rank,
            "order": s.order,
            "step_samples": s.global_batch * s.accumulation,
            "accumulation": s.accumulation,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where `state` stood. Order "global": also from a state written at another
        world size, batch size or accumulation with the same samples per optimizer step (the
        position is carried over as samples of the epoch's order)."""
        mine = self.state_dict()
        was_global = state.get("order", "rank") == "global"
        keys = _GLOBAL_KEYS if mine["order"] == "global" and was_global else _ORDER_KEYS
        for key in ("order", *keys):
            if state.get(key, "rank" if key == "order" else None) != mine[key]:
                raise UserError(
                    f"cannot resume the data stream: {key} was {state.get(key)!r}, "
                    f"now {mine[key]!r}"
                )
        batches = int(state["batches"])
        if keys is _GLOBAL_KEYS:
            done = batches * int(state["batch_size"]) * int(state["world_size"])
            batches, partial = divmod(done, self.stream.global_batch)
            if partial:
                raise UserError(
                    f"cannot resume the data stream: {done} samples of the epoch were read, "
                    f"not a whole number of batches of {self.stream.global_batch} over every rank"
                )
        if not 0 <= batches <= len(self):
            raise UserError(f"cannot resume the data stream at batch {batches} of {len(self)}")
        self._cursor.move(int(state["epoch"]), batches)

    def close(self) -> None:
        """Stop the worker processes now."""
        self._loader = None

    def _windows(self) -> DataLoader:
        if self._loader is None:
            self.stream.fill_cache()  # before workers start, so they inherit the decoded shards
            workers = self.num_workers
            self._loader = DataLoader(
                _Windows(self.stream),
                batch_size=None,
                sampler=_Plan(self.stream, self._cursor),
                num_workers=workers,
                persistent_workers=workers > 0,
                pin_memory=False,  # the float32 batches are pinned instead (see _model_input)
                prefetch_factor=self.prefetch_factor if workers else None,
                # A private generator: starting workers must not draw from the global RNG.
                generator=torch.Generator().manual_seed(0),
            )
        return self._loader

    def _model_input(self, raw: torch.Tensor) -> torch.Tensor:
        """A window's stored values as float32 times the manifest's scale, in one pass (token
        ids: as int64).

        With pin_memory (and CUDA) the result lands in page-locked memory, so batches go to
        the GPU with non_blocking copies; the 4x smaller raw values are what crossed from
        the worker.
        """
        pin = self.pin_memory and torch.cuda.is_available()
        if self.stream.manifest.tokens:  # token ids: the embedding takes int64
            x = torch.empty(raw.shape, dtype=torch.int64, pin_memory=pin)
            x.copy_(raw)
            return x
        x = (
            torch.empty(raw.shape, dtype=torch.float32, pin_memory=True)
            if pin
            else _float_tensor(raw.shape)
        )
        # NumPy, not torch.mul: torch's mixed uint8 -> float32 kernel is several times slower.
        np.multiply(
            raw.numpy(), np.float32(self.stream.manifest.scale), out=x.numpy(), casting="unsafe"
        )
        if self.stream.normalize is not None:  # per channel, after the scale
            mean, std = (torch.tensor(v, dtype=torch.float32) for v in self.stream.normalize)
            shape = (1, len(mean)) + (1,) * (x.dim() - 2)
            x.sub_(mean.view(shape)).div_(std.view(shape))
        return x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        cursor = self._cursor
        if cursor.finished:
            cursor.position, cursor.finished = 0, False
        if cursor.position >= len(self):
            return
        batch = self.stream.batch_size
        for item in self._windows():
            if isinstance(item, _Failure):
                raise UserError(item.message)
            first, ids, raw, y = item
            x = self._model_input(raw)
            for offset in range(0, len(y), batch):
                cursor.position = first + offset // batch + 1
                self.last_ids = ids[offset : offset + batch]
                yield x[offset : offset + batch], y[offset : offset + batch]
        cursor.finished = True


def _float_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised float32 tensor. One too large for malloc to reuse (a batch of 64
    images at 224 x 224 is 38 MB) sits in private memory advised for transparent huge pages:
    faulting it in 2 MiB pages rather than 4 KiB ones cut the conversion from 15 to 6 ms on
    2 cores."""
    nbytes = math.prod(shape) * 4
    if nbytes < _MALLOC_REUSE_LIMIT or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=torch.float32)
    area = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area.madvise(mmap.MADV_HUGEPAGE)
    # The tensor holds the mapping: it is unmapped when the last view of the batch goes.
    return torch.frombuffer(area, dtype=torch.float32).view(shape)
