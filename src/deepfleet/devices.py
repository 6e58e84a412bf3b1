"""Device discovery (`deepfleet doctor`) and the choice of device and backend for a job."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch
import torch.distributed as dist

from deepfleet.errors import UserError


def choose_device(preference: str = "auto", local_rank: int | None = None) -> torch.device:
    """auto: a CUDA device when one is visible, else the CPU. On CUDA a rank takes the GPU of
    its local rank: `local_rank` as the caller's rank environment read it (torchrun's
    LOCAL_RANK or Slurm's SLURM_LOCALID), else $LOCAL_RANK, else the current device."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise UserError("run.device: cuda was asked for, but no CUDA device is visible")
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UserError(
                f"local rank {local_rank} has no GPU: this node shows {count} "
                "CUDA device(s); start at most one process per GPU"
            )
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def set_cpu_threads(threads: int | None) -> int:
    """Set torch's intra-op CPU threads for this process and return the count: `threads`,
    else $OMP_NUM_THREADS, else 1 (what torchrun gives each worker). One process and each
    worker of many are set the same way, so a job's result does not depend on how it was
    started."""
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def backend_for(device: torch.device) -> str:
    """The collective backend that suits a device: NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def _nccl_version() -> str | None:
    if not torch.cuda.is_available():
        return None
    try:
        return ".".join(str(p) for p in torch.cuda.nccl.version())
    except Exception:  # NCCL missing from this build
        return None


def describe_machine() -> dict[str, Any]:
    """Everything `doctor` prints, as data (also embedded in benchmark results)."""
    cuda_devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            cuda_devices.append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
                    "compute_capability": f"{props.major}.{props.minor}",
                }
            )
    device = choose_device("auto")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "cuda_devices": cuda_devices,
        "nccl_available": dist.is_available() and dist.is_nccl_available(),
        "nccl": _nccl_version(),
        "gloo_available": dist.is_available() and dist.is_gloo_available(),
        "job_device": str(device),
        "job_backend": backend_for(device),
    }
