"""One process of a scaling measurement, started by torch.distributed.run.

python -m torch.distributed.run --standalone --nproc-per-node N \
    -m deepfleet.bench._worker SPEC.json RESULT.json

Gradients are averaged with one flat all-reduce after backward, so communication is its own
timed phase. (DDP overlaps that all-reduce with backward; this measures it unoverlapped.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from deepfleet._atomic import write_json_atomic
from deepfleet.bench._energy import NoMeter
from deepfleet.bench._peak import Peak
from deepfleet.bench._train import TrainOptions, bench_train
from deepfleet.bench._workloads import load_workload
from deepfleet.devices import choose_device
from deepfleet.parallel._env import detect_env, process_group


def allreduce_gradients(model: nn.Module) -> None:
    """Average every gradient over the ranks in one flat buffer (one collective per step)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    env = detect_env()
    device = choose_device(spec["device"], env.local_rank)  # cuda: the GPU of the local rank
    if spec.get("threads_per_rank"):
        torch.set_num_threads(spec["threads_per_rank"])
    # the project's group setup (backend per device, set_device, teardown also on error);
    # it runs before any timing starts, so the figures measure the same steps as before
    with process_group(env, device):
        rank, world = env.rank, env.world_size
        workload = load_workload(spec["workload"])
        result = bench_train(
            workload,
            device,
            TrainOptions(**spec["train"]),
            meter=NoMeter("not measured in scaling runs"),
            peak=Peak(**spec["peak"]),
            grad_sync=allreduce_gradients,
            world_size=world,
            seed_offset=rank,
            flops_per_step=spec["flops_per_step"],
        )
        per_rank = [None] * world
        dist.all_gather_object(per_rank, result["samples_per_s"]["median"])
        result["rank_samples_per_s"] = per_rank
        result["threads_per_rank"] = torch.get_num_threads()
        if rank == 0:
            write_json_atomic(Path(out_path), result)


if __name__ == "__main__":
    main(*sys.argv[1:3])
