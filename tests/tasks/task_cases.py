"""Small problems for every built-in task, and the worker that trains them under each
strategy on every rank of a job (started through torch's elastic agent)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from deepfleet.data import SplitArrays
from deepfleet.models import gpt
from deepfleet.selftest import GLOBAL_BATCH, selftest_config
from deepfleet.tasks import Targets, Task, build_task, target_stats

ROWS = 4 * GLOBAL_BATCH
CONTEXT, VOCAB = 8, 16
STRATEGIES = [
    ("ddp", "ddp", 1, 1, None),
    ("ddp + accumulation", "ddp", 2, 2, None),
    ("fsdp", "fsdp", 1, 1, None),
    ("pipeline 1f1b", "pipeline", None, 1, "1f1b"),
]


def task_data(name: str) -> tuple[Task, SplitArrays]:
    """A learnable problem for task `name`, with targets stored as a data set stores them."""
    g = torch.Generator().manual_seed(1)
    if name == "causal_lm":
        tokens = torch.randint(0, VOCAB, (ROWS, CONTEXT + 1), generator=g)
        targets = Targets("int32", (CONTEXT,), [], {"vocab_size": VOCAB})
        x, y = tokens[:, :-1].clone(), tokens[:, 1:].to(torch.int32)
        return build_task(name, targets), SplitArrays(ids=torch.arange(ROWS), x=x, y=y)
    x = torch.randn(ROWS, 16, generator=g)
    scores = x @ torch.randn(16, 4, generator=g)
    if name == "classification":
        y = scores.argmax(1)
        targets = Targets("int64", (), ["a", "b", "c", "d"])
    elif name == "multilabel":
        y = (scores > 0).to(torch.uint8)
        targets = Targets("uint8", (4,), ["a", "b", "c", "d"])
    else:
        y = (scores[:, :2] * 3 + 5).float()
        targets = Targets("float32", (2,), ["0", "1"], target_stats(y.numpy()))
    return build_task(name, targets), SplitArrays(ids=torch.arange(ROWS), x=x, y=y)


def task_model(task: Task) -> nn.Module:
    """Sequential models (a pipeline cuts them), the same initial weights every time."""
    torch.manual_seed(0)
    if task.name == "causal_lm":
        return gpt((CONTEXT,), task.output_size(), dim=16, layers=2, heads=2)
    out = task.output_size()
    layers = [nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, out)]
    return nn.Sequential(*layers)


def train_task(name: str, strategy: str, world: int, env, device, *args) -> dict[str, Any]:
    from deepfleet.train import Trainer

    task, data = task_data(name)
    config = selftest_config(strategy, world, *args)
    if name == "causal_lm":
        # Attention's key bias has a gradient of zero up to rounding (softmax ignores a shift
        # shared by every key); AdamW would scale that rounding noise up to the learning rate.
        phase = config.phases[0].model_copy(update={"optimizer": "sgd", "lr": 0.1})
        config = config.model_copy(update={"phases": [phase]})
    trainer = Trainer(config, task_model(task), device, seed=0, task=task, env=env)
    result = trainer.fit(data, data)
    weights = {k: v.detach().cpu().clone() for k, v in trainer.strategy.full_state_dict().items()}
    return {"weights": weights, "history": result.history}


def worker(name: str) -> dict[str, Any]:
    """Every strategy on this rank; rank 0 returns the weights and the epoch records."""
    from deepfleet.devices import choose_device
    from deepfleet.parallel import detect_env, process_group

    env = detect_env()
    device = choose_device("cpu", env.local_rank)
    with process_group(env, device):
        return {
            case: train_task(name, strategy, env.world_size, env, device, divisor, acc, schedule)
            for case, strategy, divisor, acc, schedule in STRATEGIES
        }


def launch(name: str, nproc: int = 2) -> dict[str, Any]:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"tasks-{os.getpid()}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.2,
        start_method="spawn",
    )
    return elastic_launch(config, worker)(name)[0]
