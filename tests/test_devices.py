"""Each rank takes the device of its local rank, whichever launcher set it, on CUDA, Intel XPU
or Apple MPS (device queries mocked); the collective backend follows the device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from conftest import tiny_job_dict
from deepfleet.config import job_from_dict
from deepfleet.devices import backend_for, bind_device, choose_device, describe_machine
from deepfleet.errors import UserError
from deepfleet.parallel import detect_env


@pytest.fixture
def machine(no_launcher_env):
    """Set what this machine shows: machine(cuda=4), machine(xpu=8), machine(mps=True)."""
    monkeypatch = no_launcher_env

    def show(cuda: int = 0, xpu: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.xpu, "is_available", lambda: xpu > 0)
        monkeypatch.setattr(torch.xpu, "device_count", lambda: xpu)
        monkeypatch.setattr(torch.xpu, "current_device", lambda: 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return show


@pytest.fixture
def four_gpus(machine):
    machine(cuda=4)


def slurm_rank_3(monkeypatch) -> None:
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_LOCALID", "3")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")


def test_plain_srun_rank_3_takes_cuda_3(four_gpus, monkeypatch):
    slurm_rank_3(monkeypatch)
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
    with pytest.raises(UserError, match="local rank 5 has no GPU: this node shows 4 CUDA"):
        choose_device("auto", 5)


def test_cpu_whatever_the_rank(four_gpus):
    assert choose_device("cpu", 3) == torch.device("cpu")


def test_plain_srun_rank_3_takes_xpu_3(machine, monkeypatch):
    machine(xpu=4)
    slurm_rank_3(monkeypatch)
    env = detect_env()
    assert env.local_rank == 3
    assert choose_device("auto", env.local_rank) == torch.device("xpu", 3)
    assert choose_device("xpu", env.local_rank) == torch.device("xpu", 3)


def test_xpu_local_rank_from_the_environment(machine, monkeypatch):
    machine(xpu=2)
    assert choose_device("auto") == torch.device("xpu", 0)  # no launcher: current device
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert choose_device("auto") == torch.device("xpu", 1)


def test_more_ranks_than_xpus_is_one_line(machine):
    machine(xpu=2)
    with pytest.raises(UserError, match="local rank 2 has no GPU: this node shows 2 XPU"):
        choose_device("auto", 2)


def test_cuda_comes_before_xpu_and_mps(machine):
    machine(cuda=1, xpu=1, mps=True)
    assert choose_device("auto", 0) == torch.device("cuda", 0)
    assert choose_device("xpu", 0) == torch.device("xpu", 0)
    assert choose_device("mps", 0) == torch.device("mps")


def test_mps_when_no_gpu(machine):
    machine(mps=True)
    assert choose_device("auto") == torch.device("mps")
    assert choose_device("auto", 0) == torch.device("mps")


def test_mps_takes_one_process_only(machine, monkeypatch):
    machine(mps=True)
    with pytest.raises(UserError, match="local rank 1 has no device: MPS is one device"):
        choose_device("auto", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UserError, match="local rank 1 has no device"):
        choose_device("mps")


def test_nothing_but_the_cpu(machine):
    machine()
    assert choose_device("auto", 3) == torch.device("cpu")


@pytest.mark.parametrize(("kind", "label"), [("cuda", "CUDA"), ("xpu", "XPU"), ("mps", "MPS")])
def test_asked_for_but_absent_is_one_line(machine, kind, label):
    machine()
    with pytest.raises(UserError, match=f"{kind} was asked for, but no {label} device is visible"):
        choose_device(kind, 0)


def test_unknown_preference_is_one_line(machine):
    machine(cuda=1)
    with pytest.raises(UserError, match="run.device 'tpu': expected auto, cpu, cuda, xpu or mps"):
        choose_device("tpu")


def test_job_file_accepts_xpu_and_mps(tmp_path):
    for device in ("xpu", "mps"):
        job = job_from_dict(tiny_job_dict(tmp_path, run={"device": device}))
        assert job.run.device == device
    with pytest.raises(UserError, match="run.device"):
        job_from_dict(tiny_job_dict(tmp_path, run={"device": "tpu"}))


def test_backend_follows_the_device(monkeypatch):
    assert backend_for(torch.device("cuda", 1)) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("mps")) == "gloo"
    monkeypatch.setattr(dist, "is_xccl_available", lambda: True, raising=False)
    assert backend_for(torch.device("xpu", 0)) == "xccl"
    monkeypatch.setattr(dist, "is_xccl_available", lambda: False)
    assert backend_for(torch.device("xpu", 0)) == "gloo"
    monkeypatch.delattr(dist, "is_xccl_available")  # a torch older than 2.8
    assert backend_for(torch.device("xpu", 0)) == "gloo"


def test_bind_device_sets_the_rank_gpu(monkeypatch):
    bound = []
    monkeypatch.setattr(torch.xpu, "set_device", bound.append)
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    for device in (torch.device("xpu", 3), torch.device("cuda", 1), torch.device("cpu")):
        bind_device(device)
    assert bound == [torch.device("xpu", 3), torch.device("cuda", 1)]


def test_machine_description_lists_xpus(machine, monkeypatch):
    machine(xpu=2)
    props = SimpleNamespace(name="Intel Data Center GPU Max 1550", total_memory=64 * 2**30)
    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda i: props)
    info = describe_machine()
    assert info["xpu_available"] is True and info["mps_available"] is False
    assert [d["index"] for d in info["xpu_devices"]] == [0, 1]
    assert info["xpu_devices"][0]["memory_gib"] == 64.0
    assert info["job_device"] == "xpu:0"
