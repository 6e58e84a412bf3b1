"""Workloads: synthetic pools are prepared once; a job's batches are its real training data."""

from __future__ import annotations

import pytest
import tomli_w
import torch

from conftest import tiny_job_dict
from deepfleet.bench import job_workload, synthetic_workload
from deepfleet.data import read_split
from deepfleet.errors import UserError


def test_synthetic_pool_is_prepared_once_and_cycled():
    calls = []

    def prepare(batch):
        calls.append(1)
        return batch

    data = synthetic_workload("gpt").batches(2, pool=3, prepare=prepare)
    drawn = [next(data) for _ in range(7)]
    assert len(calls) == 3
    assert drawn[0] is drawn[3] is drawn[6]
    x, y = drawn[0]
    assert x.shape == y.shape == (2, 128) and x.dtype == torch.long and int(x.max()) < 4096


def test_job_batches_come_from_the_training_split(tmp_path, digits_data):
    job = tmp_path / "job.toml"
    job.write_text(tomli_w.dumps(tiny_job_dict(tmp_path)))
    workload = job_workload(job, digits_data)
    assert workload.batch_size == 64 and workload.input_shape == (1, 8, 8)
    train = read_split(digits_data, "train")
    rows = {tuple(x.flatten().tolist()): int(y) for x, y in zip(train.x, train.y, strict=True)}
    x, y = next(workload.batches(64))
    for sample, label in zip(x, y, strict=True):
        assert rows[tuple(sample.flatten().tolist())] == int(label)
    optimizer = workload.optimizer(workload.build())
    assert isinstance(optimizer, torch.optim.AdamW)  # the job's first phase
    with pytest.raises(UserError, match="larger than the training split"):
        big = tmp_path / "big.toml"
        raw = tiny_job_dict(tmp_path)
        raw["train"]["batch_size"] = 100_000
        big.write_text(tomli_w.dumps(raw))
        job_workload(big, digits_data)
