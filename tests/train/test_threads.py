"""One process sets its CPU threads the way torchrun sets its workers', reports the count, and
a deterministic job with the same thread count repeats bit for bit."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.devices import set_cpu_threads
from deepfleet.jobs import stage_prepare, stage_train
from deepfleet.runs import create_run
from deepfleet.train import read_metrics


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _train(tmp_path, name: str, **run):
    job = job_from_dict(tiny_job_dict(tmp_path, run={"name": name, **run}))
    paths = create_run(job)
    stage_prepare(paths, job)
    fit = stage_train(paths)
    setup = next(r for r in read_metrics(paths.metrics) if r["kind"] == "setup")
    return fit, setup


def test_default_is_one_thread_like_a_torchrun_worker(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    _, setup = _train(tmp_path, "default")
    assert setup["threads"] == 1
    assert torch.get_num_threads() == 1


def test_job_file_and_environment_set_the_count(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_cpu_threads(None) == 2
    assert set_cpu_threads(3) == 3 and torch.get_num_threads() == 3
    _, setup = _train(tmp_path, "two", threads=2)
    assert setup["threads"] == 2


def test_same_threads_same_metrics(tmp_path):
    first, _ = _train(tmp_path, "a", threads=1)
    again, _ = _train(tmp_path, "b", threads=1)
    keys = ("train_loss", "val_loss", "val_accuracy")
    assert [[e[k] for k in keys] for e in first.history] == [
        [e[k] for k in keys] for e in again.history
    ]
    assert first.best_epoch == again.best_epoch
