"""Shared fixtures: a small digits job, a prepared data set and a trained run, built once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepfleet.config import JobConfig, job_from_dict
from deepfleet.data import load_source, write_dataset
from deepfleet.jobs import stage_evaluate, stage_export, stage_prepare, stage_train
from deepfleet.runs import RunPaths, create_run

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _torch_modes():
    """Each test starts with torch's process-wide modes as the last one found them: a test
    that trains with run.deterministic = true, or sets the thread count, leaves the next
    test's numerics and speed alone, whatever the order."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_num_threads(threads)


def tiny_job_dict(tmp_path: Path, **sections) -> dict:
    """A digits job small enough to train in a second or two."""
    job = {
        "run": {"name": "tiny", "runs_dir": str(tmp_path / "runs"), "seed": 0},
        "data": {"source": "digits", "shards": 2},
        "model": {"name": "mlp", "params": {"hidden": [64]}},
        "train": {
            "batch_size": 64,
            "phases": [
                {"name": "a", "epochs": 2, "lr": 0.01, "schedule": "cosine", "warmup_steps": 5},
                {"name": "b", "epochs": 1, "lr": 0.003, "optimizer": "sgd"},
            ],
        },
    }
    for name, values in sections.items():
        job.setdefault(name, {}).update(values)
    return job


@pytest.fixture
def tiny_job(tmp_path: Path) -> JobConfig:
    return job_from_dict(tiny_job_dict(tmp_path))


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory) -> Path:
    """Digits prepared once: 2 train shards, val and test splits."""
    out = tmp_path_factory.mktemp("data") / "digits"
    write_dataset(load_source("digits"), out, shards=2, val_fraction=0.1, test_fraction=0.2, seed=0)
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> RunPaths:
    """A run folder that has been prepared, trained, evaluated and exported (read-only use)."""
    base = tmp_path_factory.mktemp("trained")
    job = job_from_dict(tiny_job_dict(base))
    paths = create_run(job)
    stage_prepare(paths, job)
    stage_train(paths)
    stage_evaluate(paths)
    stage_export(paths)
    return paths


def run_deepfleet(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """The real command line in a subprocess (python -m deepfleet)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "deepfleet", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# The variables torchrun, a PyTorchJob and Slurm set for a rank.
LAUNCHER_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_NTASKS_PER_NODE",
)


@pytest.fixture
def no_launcher_env(monkeypatch):
    """A process no launcher started: every rank variable unset."""
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch
