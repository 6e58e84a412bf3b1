"""ShardStream / StreamLoader: partition across ranks x workers, shuffle, resume, cache."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from deepfleet.data import Samples, ShardStream, StreamLoader, read_split, write_dataset
from deepfleet.errors import UserError

N = 301  # divisible by neither 2 nor 3, so "pad" and "drop" both have work to do
BATCH = 16


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory) -> Path:
    """301 training samples of 1x4x4 uint8 in 4 shards; pixel values encode the id."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(N, 1, 4, 4), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(N) % 256
    x[:, 0, 0, 1] = np.arange(N) // 256
    samples = Samples(
        x=x, y=np.arange(N) % 5, class_names=list("abcde"), description="test", scale=1 / 255
    )
    out = tmp_path_factory.mktemp("stream") / "odd"
    write_dataset(samples, out, shards=4, val_fraction=0, test_fraction=0, seed=0)
    return out


def epoch_batches(loader: StreamLoader, epoch: int) -> list[torch.Tensor]:
    loader.set_epoch(epoch)
    out = []
    for _x, _y in loader:
        out.append(loader.last_ids.clone())
    return out


@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_partition_over_ranks_and_workers_reads_each_sample_once(odd_data, uneven):
    for world in (1, 2, 3):
        per_rank = math.ceil(N / world) if uneven == "pad" else N // world
        reference = None
        for workers in (0, 1, 2):
            seen: list[int] = []
            per_rank_batches = []
            for rank in range(world):
                stream = ShardStream(
                    odd_data,
                    batch_size=BATCH,
                    rank=rank,
                    world_size=world,
                    seed=3,
                    uneven=uneven,
                    shuffle_buffer=48,
                )
                loader = StreamLoader(stream, num_workers=workers)
                batches = epoch_batches(loader, epoch=1)
                assert len(batches) == len(loader) == math.ceil(per_rank / BATCH)
                assert sum(len(b) for b in batches) == per_rank
                per_rank_batches.append([b.tolist() for b in batches])
                seen += torch.cat(batches).tolist()
            counts = collections.Counter(seen)
            if uneven == "pad":
                # every sample once, plus world * per_rank - N padding repeats of distinct ones
                assert set(counts) == set(range(N))
                assert sum(c - 1 for c in counts.values()) == world * per_rank - N
                assert max(counts.values()) <= 2
            else:
                assert len(seen) == len(counts) == world * (N // world)
                assert N - len(counts) == N % world
            # the batches themselves do not depend on the number of workers
            if reference is None:
                reference = per_rank_batches
            assert per_rank_batches == reference, (world, workers)


def test_batches_hold_the_stored_values(odd_data):
    full = read_split(odd_data, "train")
    by_id = {int(i): k for k, i in enumerate(full.ids)}
    loader = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=1, shuffle_buffer=64))
    total = 0
    for x, y in loader:
        rows = torch.tensor([by_id[int(i)] for i in loader.last_ids])
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, full.x[rows]) and torch.equal(y, full.y[rows])
        # the first pixels encode the id (independent of the reader's bookkeeping)
        raw = torch.round(x[:, 0, 0, 0] * 255) + 256 * torch.round(x[:, 0, 0, 1] * 255)
        assert torch.equal(raw.long(), loader.last_ids)
        total += len(y)
    assert total == N


def test_batches_in_huge_page_memory_hold_the_stored_values_after_the_loader(odd_data, monkeypatch):
    """Windows too large for malloc to reuse are converted into memory of their own; the
    batches (views of it) keep their values after the loader and its window are gone."""
    import deepfleet.data._loader as loader_module

    monkeypatch.setattr(loader_module, "_MALLOC_REUSE_LIMIT", 0)
    full = read_split(odd_data, "train")
    by_id = {int(i): k for k, i in enumerate(full.ids)}
    loader = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=1, shuffle_buffer=64))
    kept = [(x, loader.last_ids.clone()) for x, _ in loader]
    del loader
    assert sum(len(ids) for _, ids in kept) == N
    for x, ids in kept:
        assert torch.equal(x, full.x[torch.tensor([by_id[int(i)] for i in ids])])


@pytest.mark.parametrize("workers", [0, 2])
def test_shuffle_is_seeded_per_epoch_and_spans_shards(odd_data, workers):
    # with workers, the same (persistent) worker processes serve every epoch
    loader = StreamLoader(
        ShardStream(odd_data, batch_size=BATCH, seed=5, shuffle_buffer=400), num_workers=workers
    )
    a1, a2, b = epoch_batches(loader, 0), epoch_batches(loader, 0), epoch_batches(loader, 1)
    flat = [torch.cat(a).tolist() for a in (a1, a2, b)]
    assert flat[0] == flat[1]
    assert flat[0] != flat[2] and sorted(flat[0]) == sorted(flat[2])
    fresh = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=5, shuffle_buffer=400))
    assert torch.cat(epoch_batches(fresh, 1)).tolist() == flat[2]
    # a buffer as large as the split mixes samples of every shard into the first batch
    shard_of = {i: k for k, part in enumerate(np.array_split(np.arange(N), 4)) for i in part}
    assert len({shard_of[i] for i in a1[0].tolist()}) >= 3
    plain = StreamLoader(ShardStream(odd_data, batch_size=BATCH, shuffle=False))
    assert torch.cat(epoch_batches(plain, 4)).tolist() == list(range(N))


@pytest.mark.parametrize("workers_before,workers_after", [(0, 2), (2, 1)])
def test_resume_mid_epoch_sees_exactly_the_rest(odd_data, workers_before, workers_after):
    def make(workers):
        stream = ShardStream(
            odd_data, batch_size=BATCH, rank=1, world_size=2, seed=9, shuffle_buffer=40
        )
        return StreamLoader(stream, num_workers=workers)

    uninterrupted = [b.tolist() for b in epoch_batches(make(0), 2)]
    first = make(workers_before)
    first.set_epoch(2)
    before, state = [], None
    for k, _ in enumerate(first):
        before.append(first.last_ids.tolist())
        if k == 6:  # stop in the middle of a window (40 samples -> 3 batches per window)
            state = first.state_dict()
            break
    assert state["batches"] == 7 and state["epoch"] == 2
    restored = make(workers_after)
    restored.load_state_dict(state)
    restored.set_epoch(2)  # the trainer's usual call keeps the restored position
    after = [restored.last_ids.tolist() for _ in restored]
    assert before + after == uninterrupted
    ids = [i for b in before + after for i in b]
    assert len(ids) == len(set(ids)) == restored.stream.per_rank
    # after a complete epoch the next one starts at batch 0
    assert restored.state_dict()["batches"] == len(restored)
    assert len(epoch_batches(restored, 3)) == len(restored)


def test_resume_at_end_of_epoch_yields_nothing_then_continues(odd_data):
    loader = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=0))
    epoch_batches(loader, 0)
    state = loader.state_dict()
    again = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=0))
    again.load_state_dict(state)
    assert list(again) == []
    assert len(epoch_batches(again, 1)) == len(again)


def test_resume_refuses_a_different_order(odd_data):
    loader = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=0))
    state = loader.state_dict()
    other = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=1))
    with pytest.raises(UserError, match="seed was 0, now 1"):
        other.load_state_dict(state)


def test_cache_gives_the_same_batches_and_leaves_global_rng_alone(odd_data):
    plain = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=2, shuffle_buffer=64))
    cached = StreamLoader(
        ShardStream(odd_data, batch_size=BATCH, seed=2, shuffle_buffer=64, cache=True),
        num_workers=1,
    )
    rng = torch.get_rng_state()
    for epoch in (0, 1):
        a = [b.tolist() for b in epoch_batches(plain, epoch)]
        assert a == [b.tolist() for b in epoch_batches(cached, epoch)]
    assert torch.equal(rng, torch.get_rng_state())
    assert len(cached.stream.rows.whole) == 4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"rank": 2, "world_size": 2}, "rank 2 is not in a world of size 2"),
        ({"uneven": "wrap"}, "uneven must be 'pad' or 'drop'"),
        ({"batch_size": 0}, "batch_size must be > 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(odd_data, kwargs, message):
    with pytest.raises(UserError, match=message):
        ShardStream(odd_data, **{"batch_size": BATCH, **kwargs})


def test_unknown_split_and_missing_folder(odd_data, tmp_path):
    with pytest.raises(UserError, match="no split 'test'"):
        ShardStream(odd_data, "test", batch_size=BATCH)
    with pytest.raises(UserError, match="does not exist"):
        ShardStream(tmp_path / "nope", batch_size=BATCH)


def _rank_main(rank: int, world: int, port: int, data: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        stream = ShardStream(
            data,
            batch_size=BATCH,
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            seed=4,
            shuffle_buffer=64,
        )
        loader = StreamLoader(stream, num_workers=1)
        loader.set_epoch(2)
        ids = [i for _ in loader for i in loader.last_ids.tolist()]
        gathered: list = [None] * world
        dist.all_gather_object(gathered, {"batches": len(loader), "ids": ids})
        if rank == 0:
            Path(out).write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_real_gloo_ranks_read_each_sample_once(odd_data, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "gathered.json"
    # fork: the ranks start without importing torch again (the parent has no process group)
    mp.start_processes(
        _rank_main,
        args=(2, port, str(odd_data), str(out)),
        nprocs=2,
        join=True,
        start_method="fork",
    )
    gathered = json.loads(out.read_text())
    assert gathered[0]["batches"] == gathered[1]["batches"] == math.ceil(151 / BATCH)
    counts = collections.Counter(gathered[0]["ids"] + gathered[1]["ids"])
    assert set(counts) == set(range(N)) and sum(counts.values()) == 2 * 151


@pytest.mark.gpu
def test_pin_memory_on_cuda(odd_data):
    loader = StreamLoader(
        ShardStream(odd_data, batch_size=BATCH, seed=0), num_workers=1, pin_memory=True
    )
    plain = StreamLoader(ShardStream(odd_data, batch_size=BATCH, seed=0))
    for (x, _), (x_plain, _) in zip(loader, plain, strict=True):
        assert x.is_pinned()
        on_gpu = x.to("cuda", non_blocking=True)
        assert torch.equal(on_gpu.cpu(), x_plain)
