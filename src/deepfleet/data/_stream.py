"""ShardStream: one rank's part of a split, read from its shards in windows of whole batches.

The order of an epoch is a pure function of (seed, epoch, rank, world_size), never of the
number of DataLoader workers:

1. The split's shards are put in a seeded order (a new one every epoch when shuffling); their
   rows, one after another, form the epoch's sequence of N samples.
2. Rank r owns the contiguous positions [r * per_rank, (r + 1) * per_rank) of that sequence, so
   it reads only the shards (and row groups) that hold them. With uneven="pad", per_rank is
   ceil(N / world_size) and positions past N wrap around to the start of the sequence (a few
   samples are seen twice); with "drop", per_rank is floor(N / world_size) and the last
   N mod world_size samples of the sequence are skipped this epoch. Either way every rank gets
   the same number of batches, which DDP needs.
3. A rank's positions are cut into windows of `shuffle_buffer` samples (rounded up to whole
   batches); each window is decoded as whole record batches and permuted with its own seed
   (the shuffle buffer), then cut into batches. The last batch of an epoch may be short; it is
   equally short on every rank.
4. DataLoader worker w reads windows w, w + W, w + 2W, ...; the loader receives them in order,
   so batch k of an epoch is the same sample set whatever the number of workers.

That is order="rank", what validation and evaluation read (each rank a contiguous part). For
training, order="global" defines every optimizer step's sample set independently of the number
of data-parallel ranks, so a job resumes exactly at another world size (as MosaicML streaming
and LitData do):

1. The epoch's sequence is the same seeded shard order. With G = batch_size x world_size x
   accumulation samples per optimizer step, it is padded ("pad": wrapping around to its start)
   or cut ("drop") to a whole number of steps: every step is full, on any world size.
2. The sequence is cut into global windows of whole steps (shuffle_buffer samples rounded up
   to a multiple of G); each window is permuted with a seed of (seed, epoch, window) alone.
3. Step k of a window takes the permuted positions [k*G, (k+1)*G); its micro-batch m the
   slice [m*G/A, (m+1)*G/A) (A = accumulation), of which rank r takes its batch_size
   positions in rank order. 2 ranks x 8 x 1, 1 rank x 16 x 1 and 1 rank x 8 x 2 all train
   step k on the same 16 samples.
Every rank decodes every window (and keeps its share): world_size times the reading of
order="rank", the price of an order that does not depend on the world size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import IterableDataset

from deepfleet.data._augment import ImageTransform
from deepfleet.data._crypto import DataKey
from deepfleet.data._decode import image_decoder
from deepfleet.data._manifest import Manifest, ShardEntry, read_manifest
from deepfleet.data._reader import dataset_key, decode_raw, open_shard
from deepfleet.errors import UserError

Window = tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]  # first batch, ids, raw x, y
_TORCH_DTYPES = {
    np.dtype(d).str: t
    for d, t in (
        (np.uint8, torch.uint8),
        (np.int8, torch.int8),
        (np.int16, torch.int16),
        (np.int32, torch.int32),
        (np.int64, torch.int64),
        (np.float16, torch.float16),
        (np.float32, torch.float32),
        (np.float64, torch.float64),
    )
}
_RAW_GROUPS_KEPT = 4  # decoded row groups kept per process: consecutive windows share one
# Parquet readers kept open per process: local shards 2; remote ones 1, because a remote
# shard's cached copy is held (not evictable) while its reader is open, and the stream must
# let go of the shards it moved past so that a cache smaller than the data set always has
# room for the next ones (a process then needs room for 3: held, arriving, prefetched).
_SHARDS_OPEN = 2
_PREFETCH_SHARDS = 2  # remote shards downloaded ahead of the one being read


class _ShardRows:
    """Row ranges of shards, decoded a row group at a time (or whole shards when caching)."""

    def __init__(
        self,
        manifest: Manifest,
        files: list[ShardEntry],
        key: DataKey | None,
        cache: bool,
        verify: bool = True,
    ) -> None:
        self.manifest, self.files, self.key, self.cache = manifest, files, key, cache
        self.verify = verify
        self._open: OrderedDict[int, Any] = OrderedDict()
        self._starts: dict[int, np.ndarray] = {}
        self._groups: OrderedDict[tuple[int, int], tuple[np.ndarray, ...]] = OrderedDict()
        self.whole: dict[int, tuple[np.ndarray, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Open Parquet readers do not cross process boundaries; the decoded cache does.
        return {**self.__dict__, "_open": OrderedDict(), "_starts": {}, "_groups": OrderedDict()}

    def _file(self, shard: int):
        if shard in self._open:
            self._open.move_to_end(shard)
            return self._open[shard]
        keep = 1 if self.manifest.remote is not None else _SHARDS_OPEN
        while len(self._open) >= keep:  # before opening: its hold may need the room
            self._close(next(iter(self._open)))
        handle = open_shard(self.manifest, self.files[shard], self.key, verify=self.verify)
        meta = handle.metadata
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        self._open[shard] = handle
        self._starts[shard] = np.concatenate([[0], np.cumsum(sizes)])
        return handle

    def _close(self, shard: int) -> None:
        """Close a shard's reader; dropping it releases a remote shard's cached copy."""
        handle = self._open.pop(shard, None)
        if handle is not None:
            handle.close()

    def prefetch(self, shards: list[int]) -> None:
        """Remote data sets: download these shards in the background (no-op when local)."""
        remote = self.manifest.remote
        if remote is not None and shards:
            remote.prefetch(self.files[s] for s in shards)

    def load_whole(self, shard: int) -> tuple[np.ndarray, ...]:
        if shard not in self.whole:
            self.whole[shard] = decode_raw(self._file(shard).read())
            self._close(shard)  # decoded: the file is not read again
        return self.whole[shard]

    def _group(self, shard: int, index: int) -> tuple[np.ndarray, ...]:
        found = self._groups.get((shard, index))
        if found is None:
            found = decode_raw(self._file(shard).read_row_group(index))
            self._groups[(shard, index)] = found
            while len(self._groups) > _RAW_GROUPS_KEPT:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end((shard, index))
        return found

    def read(self, shard: int, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """ids, raw x, labels of rows [start, stop) of one shard."""
        if self.cache:
            return tuple(a[start:stop] for a in self.load_whole(shard))
        if shard not in self._starts:  # row-group bounds outlive the reader: no reopening
            self._file(shard)  # for row groups still decoded in memory
        starts = self._starts[shard]
        first = int(np.searchsorted(starts, start, side="right")) - 1
        last = int(np.searchsorted(starts, stop - 1, side="right")) - 1
        parts = []
        for g in range(first, last + 1):
            lo = max(start, starts[g]) - starts[g]
            hi = min(stop, starts[g + 1]) - starts[g]
            parts.append(tuple(a[lo:hi] for a in self._group(shard, g)))
        return _concat(parts)


def _distinct(shards: list[int]) -> list[int]:
    return list(dict.fromkeys(shards))


def _concat(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    if len(parts) == 1:
        return parts[0]
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


class ShardStream(IterableDataset):
    """A split of a prepared data set, streamed to one rank (iterate it with StreamLoader).

    As an IterableDataset its items are windows of whole batches (first batch index, ids,
    x in its stored dtype, y); StreamLoader reads the windows in DataLoader workers, scales
    x to float32 and cuts the windows into batches.
    """

    def __init__(
        self,
        data: str | Path | Manifest,
        split: str = "train",
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        uneven: Literal["pad", "drop"] = "pad",
        shuffle_buffer: int = 8192,
        cache: bool = False,
        verify: bool = True,
        key: str | Path | bytes | DataKey | None = None,
        order: Literal["rank", "global"] = "rank",
        accumulation: int = 1,
        transform: ImageTransform | None = None,
        normalize: tuple[list[float], list[float]] | None = None,
    ) -> None:
        super().__init__()
        _check_args(batch_size, rank, world_size, seed, uneven, shuffle_buffer)
        if order not in ("rank", "global") or accumulation < 1:
            raise UserError(f"order {order!r} / accumulation {accumulation}: not a stream order")
        self.manifest = data if isinstance(data, Manifest) else read_manifest(data)
        self.split = split
        entries = self.manifest.shards(split)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.uneven = seed, shuffle, uneven
        self.shard_rows = np.array([e.rows for e in entries], dtype=np.int64)
        self.num_samples = int(self.shard_rows.sum())
        if self.num_samples < world_size:
            raise UserError(
                f"split {split!r} has {self.num_samples} samples, fewer than the {world_size} ranks"
            )
        ceil = uneven == "pad"
        self.order, self.accumulation = order, accumulation
        if order == "global":
            step = self.global_batch * accumulation
            steps = -(-self.num_samples // step) if ceil else self.num_samples // step
            self.length = steps * step  # every optimizer step full, on any world size
            self.per_rank = self.length // world_size
            window_steps = max(1, math.ceil(shuffle_buffer / step))
            self.window_batches = window_steps * accumulation
        else:
            self.per_rank = (
                -(-self.num_samples // world_size) if ceil else (self.num_samples // world_size)
            )
            self.length = self.per_rank * world_size
            self.window_batches = max(1, math.ceil(shuffle_buffer / batch_size))
        self.num_batches = math.ceil(self.per_rank / batch_size)
        self.num_windows = math.ceil(self.num_batches / self.window_batches)
        self.epoch = 0
        self.start_batch = 0
        self.rows = _ShardRows(
            self.manifest, entries, dataset_key(self.manifest, key), cache, verify
        )
        # Encoded images are decoded (and augmented) per sample in read_window; the default
        # transform is evaluation's. normalize: per-channel (mean, std), applied by the loader.
        self.decoder = image_decoder(self.manifest, transform)
        self.normalize = normalize
        # Batches per loader item: decoding is the work, so workers share a window by batches.
        self.decode_batches = 1 if self.decoder is not None else None
        self._last_window: tuple[tuple[int, int] | None, Any] = (None, None)
        self._window_step = 1  # windows this process skips between two it reads (workers)

    @property
    def global_batch(self) -> int:
        """Samples of one micro-batch over every rank."""
        return self.batch_size * self.world_size

    @property
    def shuffle_buffer(self) -> int:
        """The effective buffer: whole batches per window times the batch size (order
        "global": the window over every rank, whole optimizer steps)."""
        per_batch = self.global_batch if self.order == "global" else self.batch_size
        return self.window_batches * per_batch

    def fill_cache(self) -> None:
        """Decode every shard of the split into memory now (cache=True only)."""
        if self.rows.cache:
            for shard in range(len(self.shard_rows)):
                self.rows.load_whole(shard)

    def shard_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.shard_rows))
        rng = np.random.default_rng([self.seed, epoch, 0])
        return rng.permutation(len(self.shard_rows))

    def segments(self, epoch: int, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """(shard, first row, end row) runs holding this rank's positions [lo, hi)."""
        start = self.rank * self.per_rank
        return self.runs(epoch, start + lo, start + hi)

    def runs(self, epoch: int, a: int, b: int) -> list[tuple[int, int, int]]:
        """(shard, first row, end row) runs holding positions [a, b) of the epoch's sequence."""
        order = self.shard_order(epoch)
        offsets = np.concatenate([[0], np.cumsum(self.shard_rows[order])])
        runs = []
        while a < b:
            g = a % self.num_samples  # "pad" wraps around to the start of the sequence
            k = int(np.searchsorted(offsets, g, side="right")) - 1
            n = min(b - a, int(offsets[k + 1]) - g)
            start = g - int(offsets[k])
            runs.append((int(order[k]), start, start + n))
            a += n
        return runs

    def read_window(
        self, epoch: int, index: int, skip_batches: int = 0, max_batches: int | None = None
    ) -> Window:
        """Window `index` of `epoch`, shuffled, minus its first `skip_batches` batches (and
        only `max_batches` of the rest, when given: a part of the window).

        x keeps the stored dtype (uint8 pixels stay 1 byte: 4x less to pass between
        processes); StreamLoader turns it into scaled float32 batches.
        """
        size = self.shuffle_buffer
        if self.order == "global":
            lo, hi = index * size, min((index + 1) * size, self.length)
            ids, x, y = self._window_rows(epoch, index, lo, hi)
            take = self._global_take(epoch, index, hi - lo, skip_batches)
        else:
            lo, hi = index * size, min((index + 1) * size, self.per_rank)
            ids, x, y = self._window_rows(epoch, index, lo, hi)
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch, 1, self.rank, index])
                take = rng.permutation(hi - lo)[skip_batches * self.batch_size :]
            else:
                take = np.arange(skip_batches * self.batch_size, hi - lo)
        if max_batches is not None:
            take = take[: max_batches * self.batch_size]
        shape, dtype = (
            (self.manifest.sample_shape, torch.uint8)
            if self.decoder
            else (x.shape[1:], _TORCH_DTYPES[x.dtype.str])
        )
        features = torch.empty((len(take), *shape), dtype=dtype)
        if torch.utils.data.get_worker_info() is not None:
            # Gather straight into shared memory: sending it to the loader then copies nothing.
            features.share_memory_()
        if self.decoder:  # encoded images: decoded here, each with its own seeded draws
            self.decoder.decode(x[take], ids[take], epoch, features.numpy())
        else:
            np.take(x, take, axis=0, out=features.numpy())
        return (
            index * self.window_batches + skip_batches,
            torch.from_numpy(ids[take]),
            features,
            torch.from_numpy(y[take]),
        )

    def _global_take(self, epoch: int, index: int, size: int, skip_batches: int) -> np.ndarray:
        """This rank's rows of a global window, batch after batch: the window's permutation
        (seeded without rank or world size) cut into micro-batches of global_batch rows, of
        which this rank takes the rank-th batch_size."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, 2, index]).permutation(size)
        else:
            perm = np.arange(size)
        per_rank = perm.reshape(-1, self.world_size, self.batch_size)[:, self.rank]
        return per_rank[skip_batches:].reshape(-1)

    def _window_rows(self, epoch: int, index: int, lo: int, hi: int) -> tuple[np.ndarray, ...]:
        """The window's stored rows (positions lo..hi of the epoch's order: the global
        sequence, or this rank's part). Encoded images are decoded a batch at a time, one part
        of a window per loader item, so a process keeps its last window's (encoded) rows for
        the next part instead of reading them again."""
        if self.decoder is not None and self._last_window[0] == (epoch, index):
            return self._last_window[1]
        spans = self.runs if self.order == "global" else self.segments
        runs = spans(epoch, lo, hi)
        # The shards this process reads next: the rest of this window, then its next window.
        ahead = _distinct([r[0] for r in runs] + self._next_window_shards(epoch, index))
        parts = []
        for run in runs:
            later = ahead[ahead.index(run[0]) + 1 :] if run[0] in ahead else []
            self.rows.prefetch(later[:_PREFETCH_SHARDS])
            parts.append(self.rows.read(*run))
        rows = _concat(parts)
        if self.decoder is not None:
            self._last_window = ((epoch, index), rows)
        return rows

    def _next_window_shards(self, epoch: int, index: int) -> list[int]:
        """The shards of the window this process reads after `index` (remote data sets
        only: for prefetching)."""
        info = torch.utils.data.get_worker_info()  # a loader's workers take turns
        following = index + (info.num_workers if info is not None else self._window_step)
        if self.manifest.remote is None or following >= self.num_windows:
            return []
        size = self.shuffle_buffer
        end = self.length if self.order == "global" else self.per_rank
        lo, hi = following * size, min((following + 1) * size, end)
        spans = self.runs if self.order == "global" else self.segments
        return [r[0] for r in spans(epoch, lo, hi)]

    def windows(
        self, epoch: int, start_batch: int = 0, worker: int = 0, num_workers: int = 1
    ) -> Iterator[Window]:
        """This worker's windows of `epoch`, beginning at batch `start_batch`."""
        first, skip = divmod(start_batch, self.window_batches)
        self._window_step = num_workers  # this worker reads every num_workers-th window
        for index in range(first + worker, self.num_windows, num_workers):
            yield self.read_window(epoch, index, skip if index == first else 0)

    def __iter__(self) -> Iterator[Window]:
        info = torch.utils.data.get_worker_info()
        worker, count = (info.id, info.num_workers) if info else (0, 1)
        return self.windows(self.epoch, self.start_batch, worker, count)


def _check_args(
    batch_size: int, rank: int, world_size: int, seed: int, uneven: str, shuffle_buffer: int
) -> None:
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise UserError(f"rank {rank} is not in a world of size {world_size}")
    if seed < 0:
        raise UserError(f"seed must be >= 0, got {seed}")
    if uneven not in ("pad", "drop"):
        raise UserError(f"uneven must be 'pad' or 'drop', got {uneven!r}")
    if shuffle_buffer <= 0:
        raise UserError(f"shuffle_buffer must be > 0, got {shuffle_buffer}")
