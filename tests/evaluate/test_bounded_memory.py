"""Evaluation reads its split in batches: its memory follows the batch, not the split."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO
from deepfleet.data import Samples, write_dataset

ROWS, WIDTH = 240_000, 512  # 123 MB of uint8 features; 492 MB as the model's float32


@pytest.mark.slow
def test_evaluating_a_large_split_holds_a_batch_not_the_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (ROWS, WIDTH), dtype=np.uint8)
    y = rng.integers(0, 10, ROWS)
    write_dataset(
        Samples(x=x, y=y, class_names=[str(i) for i in range(10)], description="noise"),
        tmp_path / "data",
        shards=1,
        val_fraction=0.0,
        test_fraction=0.5,
        seed=0,
        rows_per_group=2048,  # 1 MiB row groups: what a reader decodes at a time
    )
    del x
    script = textwrap.dedent(
        f"""
        import pyarrow as pa, torch
        from deepfleet.data import ShardStream, StreamLoader, read_manifest
        from deepfleet.evaluate import evaluator_for
        from deepfleet.tasks import build_task
        from deepfleet.train import run_split, split_batches

        manifest = read_manifest({str(tmp_path / "data")!r})
        task = build_task("classification", manifest.targets)
        model = torch.nn.Linear({WIDTH}, 10)
        evaluator = evaluator_for(task)
        stream = ShardStream(manifest, "test", batch_size=256, shuffle=False, uneven="pad",
                             shuffle_buffer=256)
        sizes = []
        class Rows:  # a sink that records what each model call held
            def update(self, output, target):
                sizes.append(len(target))
        seen = run_split(model, split_batches(StreamLoader(stream)), [evaluator, Rows()],
                         torch.device("cpu"))
        # Decoded shard data lives in Arrow's memory pool: its peak is what was held at once.
        peak = pa.default_memory_pool().max_memory() / 2**20
        print(seen, evaluator.compute()["samples"], max(sizes), peak)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen, counted, largest, peak = done.stdout.split()
    assert int(seen) == int(counted) == ROWS // 2  # every test row, once
    assert int(largest) == 256  # the model saw batches, never the split
    # The split decodes to 61 MiB (246 MiB as float32); the reader held a few row groups.
    assert float(peak) < 16, peak  # a quarter of the split at most
