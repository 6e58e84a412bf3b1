"""Who am I in the job: rank and world size from torchrun, a PyTorchJob or Slurm, and the
process group's lifetime (always torn down, also on error)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from deepfleet.devices import backend_for, bind_device
from deepfleet.errors import UserError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job. A single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    launcher: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.launcher != "none"

    @property
    def restart_count(self) -> int:
        """How many times the elastic agent has restarted this worker group (0 = first try)."""
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def detect_env() -> DistEnv:
    """Read the standard variables: torchrun and PyTorchJob set RANK/WORLD_SIZE (LOCAL_RANK
    too under torchrun); `srun` sets SLURM_PROCID/SLURM_NTASKS. Nothing set: one process."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        world = _int("WORLD_SIZE")
        local = _int("LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
        local_world = _int("LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in os.environ else 1
        launcher = "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else "env"
        return DistEnv(_int("RANK"), world, local, local_world, launcher)
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        tasks_per_node = os.environ.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0]
        return DistEnv(
            _int("SLURM_PROCID"),
            _int("SLURM_NTASKS"),
            _int("SLURM_LOCALID"),
            int(tasks_per_node) if tasks_per_node.isdigit() else 1,
            "slurm",
        )
    return DistEnv()


def in_worker() -> bool:
    """True when an outside launcher (torchrun, srun, a PyTorchJob) started this process."""
    return detect_env().distributed


def _export_for_init(env: DistEnv) -> None:
    """init_process_group's env:// method reads RANK/WORLD_SIZE/MASTER_*; Slurm sets none."""
    os.environ.setdefault("RANK", str(env.rank))
    os.environ.setdefault("WORLD_SIZE", str(env.world_size))
    os.environ.setdefault("LOCAL_RANK", str(env.local_rank))
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise UserError(
                f"{name} is not set: under {env.launcher}, export MASTER_ADDR "
                "(the first node's host name) and MASTER_PORT before starting"
            )


def _attempt_store(env: DistEnv, timeout: timedelta) -> dist.Store | None:
    """Under the elastic agent, the workers' store outlives a restart: without a prefix per
    attempt, a restarted rank can read a dead rank's address from the previous attempt and
    fail to connect. None: let init_process_group read the environment (env://)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    client = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
    )
    return dist.PrefixStore(f"deepfleet/attempt_{env.restart_count}", client)


@contextmanager
def process_group(
    env: DistEnv, device: torch.device, timeout_s: float = 600.0
) -> Iterator[DistEnv]:
    """Join the job's process group (NCCL on CUDA, XCCL on XPU, else gloo) and always
    leave it."""
    if not env.distributed:
        yield env
        return
    _export_for_init(env)
    bind_device(device)
    backend = backend_for(device)
    # device_id binds the group to the rank's GPU up front; gloo has no device to bind.
    kwargs = {"device_id": device} if backend != "gloo" else {}
    timeout = timedelta(seconds=timeout_s)
    store = _attempt_store(env, timeout)
    if store is not None:
        kwargs.update(store=store, rank=env.rank, world_size=env.world_size)
    dist.init_process_group(backend, timeout=timeout, **kwargs)
    try:
        yield env
    finally:
        dist.destroy_process_group()
