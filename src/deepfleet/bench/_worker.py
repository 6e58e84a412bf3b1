"""One process of a scaling measurement, started by deepfleet's launcher (the elastic agent
of torch.distributed.run, as `deepfleet train --nproc N` starts its workers).

Each rank runs the training benchmark through the Trainer's own step under the strategy
`deepfleet train` would choose (ddp for a model that fits in every process), so the gradient
all-reduce is the one training runs, overlapped with backward as in training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from deepfleet.bench._peak import Peak
from deepfleet.bench._train import TrainOptions, bench_train
from deepfleet.bench._workloads import load_workload
from deepfleet.devices import choose_device
from deepfleet.energy import NoMeter
from deepfleet.parallel import detect_env, process_group


def scaling_worker(spec: dict[str, Any]) -> dict[str, Any] | None:
    """What each rank runs; rank 0 returns the result, the others None."""
    env = detect_env()
    device = choose_device(spec["device"], env.local_rank)  # cuda: the GPU of the local rank
    if spec.get("threads_per_rank"):
        torch.set_num_threads(spec["threads_per_rank"])
    # the project's group setup (backend per device, set_device, teardown also on error);
    # it runs before any timing starts
    with process_group(env, device):
        workload = load_workload(spec["workload"])
        result = bench_train(
            workload,
            device,
            TrainOptions(**spec["train"]),
            meter=NoMeter("not measured in scaling runs"),
            peak=Peak(**spec["peak"]),
            env=env,
            flops_per_step=spec["flops_per_step"],
        )
        per_rank = [None] * env.world_size
        dist.all_gather_object(per_rank, result["samples_per_s"]["median"])
        result["rank_samples_per_s"] = per_rank
        result["threads_per_rank"] = torch.get_num_threads()
        return result if env.rank == 0 else None
