"""`deepfleet selftest --nproc N`: a short distributed check of this machine. Every strategy
trains a few steps on the same tiny problem and is compared with one process on the same
global batch; an all-reduce is checked and timed. It drives the Trainer under each strategy,
so it sits above both deepfleet.train and deepfleet.parallel.

On 2 or 4 processes a small gpt also trains under the multi-dimensional layouts of that size
(tensor parallel; an interleaved pipeline of two stages per rank; FSDP over tensor parallel
with activation checkpointing; HSDP; replicas of tensor-parallel pairs; two pipelines of two
stages side by side), each
compared with one process."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from deepfleet.config import TrainSection
from deepfleet.data import SplitArrays
from deepfleet.devices import choose_device, synchronize
from deepfleet.models import gpt
from deepfleet.parallel import LaunchOptions, detect_env, process_group, start_workers
from deepfleet.tasks import CausalLMTask
from deepfleet.train import Trainer

# (name, strategy, per-rank batch divisor, accumulation, pipeline schedule)
CASES = [
    ("ddp", "ddp", 1, 1, None),
    ("ddp + accumulation", "ddp", 2, 2, None),
    ("fsdp", "fsdp", 1, 1, None),
    ("pipeline 1f1b", "pipeline", None, 1, "1f1b"),
    ("pipeline gpipe", "pipeline", None, 1, "gpipe"),
]
GLOBAL_BATCH = 32
CHECK_LAYERS = 3  # linear layers of selftest_model: pipelines of up to 3 stages
# (name, [train.parallel] degrees, activation checkpointing) of the gpt, by world size
INTERLEAVED = {"schedule": "interleaved", "interleave": 2, "microbatches": 4}
LAYOUTS: dict[int, list[tuple[str, dict[str, Any], str]]] = {
    2: [
        ("tp 2", {"tp": 2}, "none"),
        (
            "pipeline 2 x 2 stages interleaved",
            {"pp": 2, "dp_shard": 1, "pipeline": INTERLEAVED},
            "none",
        ),
    ],
    4: [
        ("fsdp 2 x tp 2 + checkpointing", {"dp_shard": 2, "tp": 2}, "full"),
        ("hsdp 2 x 2", {"dp_replicate": 2, "dp_shard": 2}, "none"),
        ("ddp 2 x tp 2", {"dp_replicate": 2, "dp_shard": 1, "tp": 2}, "none"),
        ("pipeline 2 x dp 2", {"pp": 2, "dp_replicate": 2, "dp_shard": 1}, "none"),
    ],
}
LM_GLOBAL_BATCH, LM_CONTEXT, LM_VOCAB = 16, 16, 64


def selftest_model(seed: int = 0) -> nn.Module:
    """Four layers so a pipeline of up to four stages can be cut from it; no dropout, so
    every strategy must give the same numbers."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4)
    )


def selftest_data(rows: int = 128, seed: int = 0) -> SplitArrays:
    """A learnable 4-class problem: labels from a random linear teacher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 16, generator=g)
    y = (x @ torch.randn(16, 4, generator=g)).argmax(1)
    return SplitArrays(ids=torch.arange(rows), x=x, y=y)


def selftest_config(
    strategy: str,
    world_size: int,
    divisor: int | None = 1,
    accumulation: int = 1,
    schedule: str | None = None,
) -> TrainSection:
    """The [train] table of one case; the global batch is GLOBAL_BATCH in every case."""
    phase = {
        "name": "check",
        "epochs": 1,
        "lr": 0.01,
        "optimizer": "adamw",
        "weight_decay": 0.01,
        "schedule": "cosine",
        "warmup_steps": 2,
    }
    table: dict[str, Any] = {
        "strategy": strategy,
        "grad_clip": 1.0,
        "log_every": 1000,
        "phases": [phase],
        "accumulation_steps": accumulation,
    }
    if strategy == "pipeline":
        table["batch_size"] = GLOBAL_BATCH
        table["pipeline"] = {"schedule": schedule, "microbatches": max(4, world_size)}
    else:
        table["batch_size"] = GLOBAL_BATCH // (world_size * (divisor or 1))
    return TrainSection.model_validate(table)


def lm_model(seed: int = 0) -> nn.Module:
    """A two-block gpt (4 heads, so tp 2 or 4 divides them); no dropout."""
    torch.manual_seed(seed)
    return gpt((LM_CONTEXT,), LM_VOCAB, dim=32, layers=2, heads=4, mlp_ratio=2)


def lm_data(rows: int = 64, seed: int = 0) -> SplitArrays:
    """Token sequences with a learnable rule: each token is the previous one plus one."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(0, LM_VOCAB, (rows, 1), generator=g)
    tokens = (start + torch.arange(LM_CONTEXT + 1)) % LM_VOCAB
    return SplitArrays(ids=torch.arange(rows), x=tokens[:, :-1], y=tokens[:, 1:])


def lm_config(world_size: int, degrees: dict[str, Any], checkpointing: str) -> TrainSection:
    """The gpt's [train] table for a layout (its degrees, and [train.pipeline] under the key
    "pipeline"); the global batch is LM_GLOBAL_BATCH always."""
    degrees = dict(degrees)
    pipeline = degrees.pop("pipeline", {})
    dp = degrees.get("dp_replicate", 1) * degrees.get("dp_shard", 1) if degrees else 1
    table = selftest_config("single", 1).model_dump()
    # SGD, not AdamW: the key bias's gradient is zero in exact arithmetic (softmax ignores
    # a shift shared by every key), and Adam divides rounding noise by its own size, which
    # turns 1e-10 differences in the order of sums into full-size steps.
    table["phases"][0].update(optimizer="sgd", lr=0.1, weight_decay=0.0)
    table.update(
        strategy="auto" if degrees else "single",
        parallel=degrees,
        batch_size=LM_GLOBAL_BATCH // dp,
        activation_checkpointing=checkpointing,
        pipeline={**table["pipeline"], **pipeline},
    )
    return TrainSection.model_validate(table)


def train_case(
    config: TrainSection, env, device: torch.device, lm: bool = False
) -> dict[str, torch.Tensor]:
    """Train one case on this rank; every rank returns the complete final weights."""
    model, task = (lm_model(), CausalLMTask()) if lm else (selftest_model(), None)
    trainer = Trainer(config, model, device, seed=0, env=env, task=task)
    trainer.fit(lm_data() if lm else selftest_data())
    return {k: v.detach().cpu().clone() for k, v in trainer.strategy.full_state_dict().items()}


def _compare(name: str, steps: int, got: dict, reference: dict, seconds: float) -> dict:
    # Gathered weights live on rank 0 only under sharding; rank 0 makes the report.
    diff = max(((got[k] - reference[k]).abs().max().item() for k in got), default=0.0)
    return {
        "check": f"{name}: {steps} steps",
        "ok": diff < 1e-4 and set(got) == set(reference),
        "seconds": seconds,
        "detail": f"max |weights - one process| = {diff:.1e}",
    }


def _all_reduce_row(device: torch.device, world: int) -> dict[str, Any]:
    values = torch.full((1 << 20,), float(dist.get_rank() + 1), device=device)  # 4 MiB
    dist.barrier()
    started = time.perf_counter()
    dist.all_reduce(values)
    synchronize(device)
    seconds = time.perf_counter() - started
    expected = world * (world + 1) / 2
    ok = bool(torch.all(values == expected))
    return {
        "check": "all-reduce 4 MiB",
        "ok": ok,
        "seconds": seconds,
        "detail": f"sum {values[0].item():g}, expected {expected:g}; "
        f"{4 / max(seconds, 1e-9):.0f} MiB/s",
    }


def selftest_worker(keep_weights: bool = False, layouts_only: bool = False) -> dict[str, Any]:
    """What each rank runs (under the elastic agent); rank 0's return value is the report.
    `layouts_only`: skip the one-dimensional strategies (tests of the layouts alone)."""
    env = detect_env()
    device = choose_device("auto", env.local_rank)
    with process_group(env, device):
        rows = [_all_reduce_row(device, env.world_size)]
        weights = {}
        reference = None
        for name, strategy, divisor, accumulation, schedule in [] if layouts_only else CASES:
            if strategy == "pipeline" and env.world_size > CHECK_LAYERS:
                continue  # one stage per rank: a stage without a layer has nothing to train
            config = selftest_config(strategy, env.world_size, divisor, accumulation, schedule)
            started = time.perf_counter()
            got = train_case(config, env, device)
            seconds = time.perf_counter() - started
            if reference is None:  # one process, the same global batch
                reference = train_case(selftest_config("single", 1), type(env)(), device)
            rows.append(
                _compare(name, len(selftest_data()) // GLOBAL_BATCH, got, reference, seconds)
            )
            if keep_weights:
                weights[name] = got
        layouts = LAYOUTS.get(env.world_size, [])
        if layouts:
            single = train_case(lm_config(1, {}, "none"), type(env)(), device, lm=True)
            if keep_weights:
                weights["lm one process"] = single
        for name, degrees, checkpointing in layouts:
            started = time.perf_counter()
            got = train_case(lm_config(env.world_size, degrees, checkpointing), env, device, True)
            seconds = time.perf_counter() - started
            steps = len(lm_data()) // LM_GLOBAL_BATCH
            rows.append(_compare(f"gpt {name}", steps, got, single, seconds))
            if keep_weights:
                weights[name] = got
        report = {
            "world_size": env.world_size,
            "device": str(device),
            "backend": dist.get_backend(),
            "rows": rows,
        }
        if keep_weights:
            report["weights"] = weights
        return report


def run_selftest(
    nproc: int, keep_weights: bool = False, layouts_only: bool = False
) -> dict[str, Any]:
    """Start `nproc` local workers through the elastic agent; rank 0's report."""
    returns = start_workers(
        LaunchOptions(nproc=nproc),
        selftest_worker,
        keep_weights,
        layouts_only,
        run_name=f"selftest-{os.getpid()}",
        what="selftest",
    )
    return returns[0]
