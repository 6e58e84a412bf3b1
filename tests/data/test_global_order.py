"""order="global": every optimizer step reads the same samples whatever the number of ranks,
batch size per rank and accumulation, so a position saved at one world size continues at
another with exactly the samples not yet read, each once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from deepfleet.data import Samples, ShardStream, StreamLoader, write_dataset
from deepfleet.errors import UserError

N = 301  # not a multiple of any step size below: "pad" and "drop" both have work
STEP = 16  # samples per optimizer step, in every layout
LAYOUTS = [(1, 16, 1), (2, 8, 1), (4, 4, 1), (1, 8, 2), (2, 4, 2)]  # (ranks, batch, accumulation)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(N, 4), dtype=np.uint8)
    samples = Samples(x=x, y=np.arange(N) % 3, class_names=list("abc"), description="t")
    out = tmp_path_factory.mktemp("global") / "set"
    write_dataset(samples, out, shards=3, val_fraction=0, test_fraction=0, seed=0)
    return out


def _loaders(data: Path, ranks: int, batch: int, accumulation: int, uneven: str = "pad"):
    return [
        StreamLoader(
            ShardStream(
                data,
                batch_size=batch,
                rank=r,
                world_size=ranks,
                seed=5,
                uneven=uneven,
                shuffle_buffer=40,
                order="global",
                accumulation=accumulation,
            )
        )
        for r in range(ranks)
    ]


def _batches(loader: StreamLoader, epoch: int) -> list[list[int]]:
    loader.set_epoch(epoch)
    out = []
    for _ in loader:
        out.append(loader.last_ids.tolist())
    return out


def _steps(loaders: list[StreamLoader], accumulation: int, epoch: int) -> list[list[int]]:
    """Each optimizer step's samples over every rank and micro-batch, sorted."""
    per_rank = [_batches(loader, epoch) for loader in loaders]
    micro = len(per_rank[0])
    assert all(len(b) == micro for b in per_rank) and micro % accumulation == 0
    return [
        sorted(i for batches in per_rank for b in batches[s : s + accumulation] for i in b)
        for s in range(0, micro, accumulation)
    ]


@pytest.mark.parametrize("uneven", ["pad", "drop"])
def test_each_step_reads_the_same_samples_on_any_layout(data, uneven):
    reference = _steps(_loaders(data, 1, 16, 1, uneven), 1, epoch=1)
    assert len(reference) == (19 if uneven == "pad" else 18)
    assert all(len(step) == STEP for step in reference)  # every step full
    counts = Counter(i for step in reference for i in step)
    if uneven == "pad":  # every sample, and 3 of them twice to fill the last step
        assert set(counts) == set(range(N)) and sum(counts.values()) == 19 * STEP
    else:
        assert max(counts.values()) == 1 and len(counts) == 18 * STEP
    for ranks, batch, accumulation in LAYOUTS[1:]:
        loaders = _loaders(data, ranks, batch, accumulation, uneven)
        assert _steps(loaders, accumulation, epoch=1) == reference, (ranks, batch, accumulation)
    # another epoch, another order
    assert _steps(_loaders(data, 1, 16, 1, uneven), 1, epoch=2) != reference


def _read(loader: StreamLoader, epoch: int, batches: int | None = None) -> list[int]:
    loader.set_epoch(epoch)
    ids = []
    for index, _ in enumerate(loader):
        ids += loader.last_ids.tolist()
        if batches is not None and index + 1 == batches:
            break
    return ids


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((2, 8, 1), (1, 16, 1)),
        ((1, 16, 1), (2, 8, 1)),
        ((4, 4, 1), (2, 8, 1)),
        ((2, 8, 1), (1, 8, 2)),
    ],
)
def test_a_position_saved_on_one_world_size_continues_on_another(data, before, after):
    """Interrupted after 7 steps, resumed on another layout: the union of what both read is
    the uninterrupted epoch, each sample as often (pad: 3 of them twice)."""
    whole = Counter(i for step in _steps(_loaders(data, 1, 16, 1), 1, epoch=0) for i in step)
    ranks, batch, accumulation = before
    first = _loaders(data, ranks, batch, accumulation)
    seen = [i for loader in first for i in _read(loader, 0, batches=7 * accumulation)]
    saved = first[0].state_dict()
    ranks, batch, accumulation = after
    for loader in _loaders(data, ranks, batch, accumulation):
        loader.load_state_dict(saved)
        assert loader.state_dict()["batches"] == 7 * accumulation
        seen += _read(loader, 0)
    assert Counter(seen) == whole


def test_a_changed_step_size_or_order_is_refused(data):
    saved = _loaders(data, 2, 8, 1)[0].state_dict()
    with pytest.raises(UserError, match="step_samples was 16, now 32"):
        _loaders(data, 2, 16, 1)[0].load_state_dict(saved)
    rank_order = StreamLoader(ShardStream(data, batch_size=8, world_size=2, seed=5))
    with pytest.raises(UserError, match="order was 'global', now 'rank'"):
        rank_order.load_state_dict(saved)
