"""Each rank takes the GPU of its local rank, whichever launcher set it (CUDA mocked)."""

from __future__ import annotations

import pytest
import torch

from deepfleet.devices import choose_device
from deepfleet.errors import UserError
from deepfleet.parallel import detect_env


@pytest.fixture
def four_gpus(no_launcher_env):
    monkeypatch = no_launcher_env
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_plain_srun_rank_3_takes_cuda_3(four_gpus, monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "3")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    env = detect_env()
    assert (env.rank, env.local_rank, env.launcher) == (3, 3, "slurm")
    assert choose_device("auto", env.local_rank) == torch.device("cuda", 3)


def test_torchrun_local_rank(four_gpus, monkeypatch):
    for name, value in {
        "RANK": "6",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "2",
        "LOCAL_WORLD_SIZE": "4",
    }.items():
        monkeypatch.setenv(name, value)
    env = detect_env()
    assert choose_device("cuda", env.local_rank) == torch.device("cuda", 2)
    assert choose_device("auto") == torch.device("cuda", 2)  # $LOCAL_RANK without an env


def test_more_ranks_than_gpus_is_one_line(four_gpus):
    with pytest.raises(UserError, match="local rank 5 has no GPU: this node shows 4"):
        choose_device("auto", 5)


def test_cpu_whatever_the_rank(four_gpus):
    assert choose_device("cpu", 3) == torch.device("cpu")
