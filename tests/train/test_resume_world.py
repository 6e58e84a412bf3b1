"""A job interrupted on one world size resumes on another (4 -> 2 -> 1 -> 2 ranks, across fsdp,
ddp, single and tensor parallel): DCP reshards the weights and optimizer state, and the global
data order continues with exactly the samples the interrupted run had not read, each once.
The sample ids every rank trained on are recorded by the model (tests/train/recording_model.py,
which also holds a tensor-parallel plan). Each resumed run starts from a checkpoint the
previous world size wrote: the uninterrupted run's at step 5 (saved asynchronously), then the
first resumed run's at step 10, then the second's at step 15."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_deepfleet
from deepfleet.config import dump_job, job_from_dict
from deepfleet.jobs import stage_prepare
from deepfleet.runs import RunPaths, create_run
from deepfleet.train import LAST, read_metrics

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
TESTS = Path(__file__).parent
N, STEP, EVERY = 400, 32, 5  # samples; per optimizer step; checkpoint interval
RECORD = "DEEPFLEET_TEST_RECORD"


def _source(tmp_path: Path) -> Path:
    """Features: id / 1000, then 7 random values; labels from a random linear teacher."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8)).astype(np.float32)
    x[:, 0] = np.arange(N) / 1000
    y = (x[:, 1:] @ rng.normal(size=(7, 3))).argmax(1)
    path = tmp_path / "ids.npz"
    np.savez(path, x=x, y=y)
    return path


def _job(tmp_path: Path, ranks: int, strategy: str, async_save: bool = False) -> dict:
    tp = strategy == "tp"
    layout = {"strategy": "auto", "parallel": {"tp": ranks}} if tp else {"strategy": strategy}
    return {
        "run": {"name": "world", "runs_dir": str(tmp_path / "runs"), "seed": 0},
        "data": {
            "source": str(_source(tmp_path)),
            "shards": 3,
            "val_fraction": 0.1,
            "test_fraction": 0.0,
            "shuffle_buffer": 96,
        },
        "model": {"name": "recording_model:recording_mlp", "path": str(TESTS)},
        "train": {
            **layout,
            "batch_size": STEP if tp else STEP // ranks,
            "phases": [{"epochs": 2, "lr": 0.01, "schedule": "cosine", "warmup_steps": 3}],
            "grad_clip": 1.0,
            "checkpoint": {"every_steps": EVERY, "keep": 20, "async_save": async_save},
        },
    }


def _train(paths: RunPaths, ranks: int, record: Path, *extra: str, tp: int = 1) -> list[list[int]]:
    """Run `deepfleet train` on `ranks` processes; every optimizer step's ids over all
    data-parallel ranks (each rank writes one line per step; the ranks of a tensor-parallel
    group the same ones, so only the group's first counts)."""
    record.mkdir()
    done = run_deepfleet(
        "train",
        str(paths.root),
        "--nproc",
        str(ranks),
        *extra,
        env={RECORD: str(record)},
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [f.read_text().splitlines() for f in sorted(record.glob("rank-*.txt"))]
    assert len(lines) == ranks and all(lines[i] == lines[i - i % tp] for i in range(ranks))
    lines = lines[::tp]
    return [sorted(int(i) for rank in lines for i in rank[s].split()) for s in range(len(lines[0]))]


def _resume(tmp_path: Path, source: RunPaths, step: int, ranks: int, strategy: str):
    """A copy of `source` as it stood after its checkpoint at `step` (an interrupted run),
    resumed on `ranks` processes under `strategy`."""
    paths = RunPaths(tmp_path / f"{strategy}-{ranks}-from-{step}")
    shutil.copytree(source.root, paths.root)
    train_dir = paths.checkpoints / "train"
    for later in [p for p in train_dir.glob("step-*") if p.name > f"step-{step:09d}"]:
        shutil.rmtree(later)
    (train_dir / "latest").write_text(f"step-{step:09d}\n")
    (paths.checkpoints / LAST).unlink()
    (paths.checkpoints / "state.json").unlink()
    paths.job_file.write_text(dump_job(job_from_dict(_job(tmp_path, ranks, strategy))))
    tp = ranks if strategy == "tp" else 1
    steps = _train(paths, ranks, tmp_path / f"record-{paths.root.name}", "--resume", tp=tp)
    setup = [r for r in read_metrics(paths.metrics) if r["kind"] == "setup"][-1]
    assert (setup["resumed_from"], setup["world_size"]) == (f"step-{step:09d}", ranks)
    return paths, steps


def _same_end(got: RunPaths, expected: RunPaths) -> None:
    """Final weights and last epoch's training loss as the uninterrupted run's."""
    want, have = load_file(expected.checkpoints / LAST), load_file(got.checkpoints / LAST)
    assert set(have) == set(want)
    for key, value in want.items():
        torch.testing.assert_close(have[key], value, rtol=1e-4, atol=1e-5)
    loss = [
        [r["train_loss"] for r in read_metrics(p.metrics) if r["kind"] == "epoch"]
        for p in (got, expected)
    ]
    assert loss[0][-1] == pytest.approx(loss[1][-1], rel=1e-4)


def test_resume_on_other_world_sizes_reads_the_rest_once(tmp_path):
    # the uninterrupted run writes its checkpoints in the background (async_save)
    job = job_from_dict(_job(tmp_path, 4, "fsdp", async_save=True))
    whole_run = create_run(job)
    stage_prepare(whole_run, job)
    whole = _train(whole_run, 4, tmp_path / "record-whole")
    assert len(whole) == 24 and all(len(step) == STEP for step in whole)  # 12 steps an epoch
    everything = Counter(i for step in whole for i in step)
    source = whole_run
    for step, ranks, strategy in [(5, 2, "ddp"), (10, 1, "single"), (15, 2, "tp")]:
        source, rest = _resume(tmp_path, source, step, ranks, strategy)
        # the steps not yet run, with the same samples in each, every sample once
        assert whole[:step] + rest == whole, (ranks, strategy)
        assert Counter(i for s in whole[:step] + rest for i in s) == everything
        _same_end(source, whole_run)
