"""The gpt's training throughput (tokens/s) and MFU in bf16 under each layout that fits the
visible GPUs: ddp, fsdp, fsdp x tp (or tp alone on 2 GPUs), and fsdp with activation
checkpointing; on one GPU, single with and without checkpointing. Used by bench_gpu.py.

Each layout runs in its own workers (start_workers, one per GPU, NCCL), through the Trainer's
own step (Trainer.train_step). FLOPs per step: 6 x parameters x tokens (the dense
approximation; attention's score FLOPs are left out, as MFU reports usually do), over the
GPUs' table peak for bf16.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import torch

# A GPT-2-medium-sized decoder: 24 blocks of width 1024, 16 heads, context 1024.
DIM, LAYERS, HEADS, CONTEXT, VOCAB = 1024, 24, 16, 1024, 32768
BATCH, STEPS, WARMUP = 8, 20, 5  # per data-parallel rank


def cases(gpus: int) -> dict[str, dict[str, Any]]:
    """[train] tables of the layouts `gpus` GPUs can hold (batch per data-parallel rank)."""
    base = {"precision": "bf16", "batch_size": BATCH, "phases": [{"lr": 1e-4}]}
    if gpus == 1:
        return {
            "single": {**base, "strategy": "single"},
            "single + checkpointing": {
                **base,
                "strategy": "single",
                "activation_checkpointing": "full",
            },
        }
    found = {
        "ddp": {**base, "strategy": "ddp"},
        "fsdp": {**base, "strategy": "fsdp"},
        "fsdp + checkpointing": {**base, "strategy": "fsdp", "activation_checkpointing": "full"},
    }
    if gpus % 2 == 0:
        name = "tp 2" if gpus == 2 else f"fsdp {gpus // 2} x tp 2"
        found[name] = {**base, "parallel": {"tp": 2}}
    return found


def layout_worker(table: dict[str, Any]) -> dict[str, Any]:
    """One rank of one layout: time STEPS steps after WARMUP; rank 0's figures are returned."""
    from deepfleet.bench import table_peak
    from deepfleet.config import TrainSection
    from deepfleet.devices import choose_device
    from deepfleet.models import gpt
    from deepfleet.parallel import detect_env, process_group
    from deepfleet.tasks import CausalLMTask
    from deepfleet.train import Trainer, build_optimizer, build_scheduler

    env = detect_env()
    device = choose_device("cuda", env.local_rank)
    with process_group(env, device):
        torch.manual_seed(0)
        model = gpt((CONTEXT,), VOCAB, dim=DIM, layers=LAYERS, heads=HEADS)
        params = sum(p.numel() for p in model.parameters())
        config = TrainSection.model_validate(table)
        trainer = Trainer(config, model, device, env=env, task=CausalLMTask())
        phase = config.phases[0]
        optimizer = build_optimizer(phase, trainer.strategy.module)
        scheduler = build_scheduler(phase, optimizer, STEPS + WARMUP)
        g = torch.Generator().manual_seed(trainer.topology.dp_rank(env.rank))
        tokens = torch.randint(0, VOCAB, (config.batch_size, CONTEXT + 1), generator=g)
        x, y = tokens[:, :-1].to(device), tokens[:, 1:].to(device)
        seconds = []
        for step in range(WARMUP + STEPS):
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            trainer.train_step(x, y, optimizer, scheduler)
            torch.cuda.synchronize(device)
            if step >= WARMUP:
                seconds.append(time.perf_counter() - started)
        step_s = statistics.median(seconds)
        tokens_per_step = config.batch_size * CONTEXT * trainer.topology.dp
        peak = table_peak(torch.cuda.get_device_name(device), "bf16")
        peak_all = peak.flops_per_s * env.world_size if peak else None
        return {
            "layout": trainer.topology.describe(),
            "parameters": params,
            "step_seconds_median": step_s,
            "tokens_per_s": tokens_per_step / step_s,
            "mfu": 6 * params * tokens_per_step / step_s / peak_all if peak_all else None,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        }


def measure_layouts() -> dict[str, Any]:
    """Every layout the visible GPUs hold, each in fresh workers."""
    from deepfleet.parallel import LaunchOptions, start_workers

    gpus = torch.cuda.device_count()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "gpus": gpus,
        "model": {"dim": DIM, "layers": LAYERS, "heads": HEADS, "context": CONTEXT, "vocab": VOCAB},
        "batch_per_dp_rank": BATCH,
        "runs": {},
    }
    for name, table in cases(gpus).items():
        returns = start_workers(
            LaunchOptions(nproc=gpus),
            layout_worker,
            table,
            run_name=f"bench-layout-{os.getpid()}",
            what=f"layout {name}",
        )
        results["runs"][name] = returns[0]
        print(f"{name}: {returns[0]}")
    return results
