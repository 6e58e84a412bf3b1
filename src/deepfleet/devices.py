"""Device discovery (`deepfleet doctor`) and the choice of device and backend for a job."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch
import torch.distributed as dist

from deepfleet.errors import UserError

# The order `auto` tries accelerators in. ROCm builds answer through torch.cuda, so "cuda"
# covers AMD GPUs too.
ACCELERATORS = ("cuda", "xpu", "mps")
_LABELS = {"cuda": "CUDA", "xpu": "XPU", "mps": "MPS"}


def accelerator_available(kind: str) -> bool:
    """Whether this torch build sees a device of `kind` (cuda, xpu or mps). Older or
    stripped builds may lack torch.xpu or torch.backends.mps altogether: that is "absent"."""
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return xpu is not None and xpu.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()
    return False


def choose_device(preference: str = "auto", local_rank: int | None = None) -> torch.device:
    """auto: CUDA when visible, else an Intel XPU, else Apple MPS, else the CPU; cuda, xpu
    and mps ask for that kind and fail in one line when it is absent. On CUDA and XPU a rank
    takes the device of its local rank: `local_rank` as the caller's rank environment read it
    (torchrun's LOCAL_RANK or Slurm's SLURM_LOCALID), else $LOCAL_RANK, else the current
    device. MPS is one device per machine, so it takes one process only."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "auto":
        kind = next((k for k in ACCELERATORS if accelerator_available(k)), "cpu")
    elif preference in ACCELERATORS:
        if not accelerator_available(preference):
            raise UserError(
                f"run.device: {preference} was asked for, but no {_LABELS[preference]} "
                "device is visible"
            )
        kind = preference
    else:
        raise UserError(f"run.device {preference!r}: expected auto, cpu, cuda, xpu or mps")
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "mps":
        if local_rank is None:
            local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if local_rank > 0:
            raise UserError(
                f"local rank {local_rank} has no device: MPS is one device per machine; "
                'start one process per machine (or use run.device = "cpu")'
            )
        return torch.device("mps")
    module = getattr(torch, kind)
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", module.current_device()))
    count = module.device_count()
    if local_rank >= count:
        raise UserError(
            f"local rank {local_rank} has no GPU: this node shows {count} "
            f"{_LABELS[kind]} device(s); start at most one process per GPU"
        )
    return torch.device(kind, local_rank)


def bind_device(device: torch.device) -> None:
    """Make `device` this process's current GPU, so collectives and bare .cuda()/.xpu()
    calls land on the rank's own device instead of device 0."""
    if device.type in ("cuda", "xpu"):
        getattr(torch, device.type).set_device(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if device.type in ("cuda", "xpu"):
        getattr(torch, device.type).synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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


def _xccl_available() -> bool:
    # is_xccl_available arrived in torch 2.8; a build without it has no XCCL either.
    check = getattr(dist, "is_xccl_available", None)
    return dist.is_available() and check is not None and bool(check())


def backend_for(device: torch.device) -> str:
    """The collective backend that suits a device: NCCL on CUDA (and ROCm, as RCCL), XCCL on
    an Intel XPU when torch was built with it, gloo otherwise."""
    if device.type == "cuda":
        return "nccl"
    if device.type == "xpu" and _xccl_available():
        return "xccl"
    return "gloo"


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
    xpu_devices = []
    if accelerator_available("xpu"):
        for i in range(torch.xpu.device_count()):
            props = torch.xpu.get_device_properties(i)
            xpu_devices.append(
                {
                    "index": i,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 2**30, 1),
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
        "xpu_available": accelerator_available("xpu"),
        "xpu_devices": xpu_devices,
        "mps_available": accelerator_available("mps"),
        "nccl_available": dist.is_available() and dist.is_nccl_available(),
        "nccl": _nccl_version(),
        "xccl_available": _xccl_available(),
        "gloo_available": dist.is_available() and dist.is_gloo_available(),
        "job_device": str(device),
        "job_backend": backend_for(device),
    }
