"""What the training loop costs on top of plain PyTorch, and 1 vs 2 ranks.

1. deepfleet's single-process Trainer against a hand-written PyTorch loop: the same model,
   the same in-memory data in the same order, the same optimizer and steps, timed per epoch
   in the same run, interleaved and repeated; the median ratio (target <= 1.02).
2. Throughput (samples/s) of the Trainer on 1 process and under ddp on 2 processes started
   by the elastic agent (gloo on the CPU, NCCL on GPUs), same global batch.

Writes benchmarks/results/train_overhead.json with the machine description.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from deepfleet.config import TrainSection
from deepfleet.data import SplitArrays
from deepfleet.devices import choose_device, describe_machine
from deepfleet.parallel import detect_env, process_group
from deepfleet.train import Trainer

ROWS, FEATURES, CLASSES, HIDDEN, BATCH, EPOCHS, REPEATS = 4096, 256, 10, 512, 128, 3, 11
RESULTS = Path(__file__).parent / "results" / "train_overhead.json"


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, CLASSES),
    )


def make_data() -> SplitArrays:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=g)).argmax(1)
    return SplitArrays(ids=torch.arange(ROWS), x=x, y=y)


def config(strategy: str = "single", batch: int = BATCH) -> TrainSection:
    return TrainSection.model_validate(
        {
            "strategy": strategy,
            "batch_size": batch,
            "log_every": 10_000,
            "phases": [{"name": "bench", "epochs": EPOCHS, "lr": 1e-3, "optimizer": "adamw"}],
        }
    )


def deepfleet_epochs(data: SplitArrays, device: torch.device) -> list[float]:
    result = Trainer(config(), make_model(), device, seed=0).fit(data)
    return [r["seconds"] for r in result.history]


def hand_written_epochs(data: SplitArrays, device: torch.device) -> list[float]:
    """The baseline: the loop one writes by hand (shuffle, index, forward, backward, step),
    with the same epoch-seeded order and a loss/accuracy tally as any real loop keeps."""
    model = make_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seconds = []
    for epoch in range(EPOCHS):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(ROWS, generator=torch.Generator().manual_seed(epoch))
        total, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for start in range(0, ROWS, BATCH):
            rows = order[start : start + BATCH]
            x, y = data.x[rows].to(device), data.y[rows].to(device)
            logits = model(x)
            loss = nn.functional.cross_entropy(logits, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            total += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
        _ = (total.item(), correct.item())
        seconds.append(time.perf_counter() - started)
    return seconds


def overhead(device: torch.device) -> dict:
    data = make_data()
    deepfleet_epochs(data, device)  # warm-up: allocator, kernels, first-call costs
    hand_written_epochs(data, device)
    ratios, ours, theirs = [], [], []
    for repeat in range(REPEATS):  # interleaved, alternating who goes first
        runs = [("deepfleet", deepfleet_epochs), ("hand", hand_written_epochs)]
        times = {name: fn(data, device) for name, fn in (runs if repeat % 2 else runs[::-1])}
        ours += times["deepfleet"]
        theirs += times["hand"]
        ratios.append(statistics.median(times["deepfleet"]) / statistics.median(times["hand"]))
        print(f"repeat {repeat + 1}/{REPEATS}: ratio {ratios[-1]:.3f}", flush=True)
    return {
        "baseline": "hand-written PyTorch loop, same model, data, order and optimizer",
        "epochs_per_run": EPOCHS,
        "repeats": REPEATS,
        "steps_per_epoch": ROWS // BATCH,
        "deepfleet_epoch_s_median": statistics.median(ours),
        "hand_written_epoch_s_median": statistics.median(theirs),
        "ratio_per_repeat": ratios,
        "ratio_median": statistics.median(ratios),
        "target": "<= 1.02",
    }


def throughput_worker(strategy: str) -> float:
    """One rank's part of the scaling run: samples/s of the last epoch (rank 0 reports)."""
    env = detect_env()
    device = choose_device("auto")
    with process_group(env, device):
        batch = BATCH // env.world_size  # the same global batch on any number of ranks
        trainer = Trainer(config(strategy, batch), make_model(), device, seed=0, env=env)
        return trainer.fit(make_data()).history[-1]["samples_per_s"]


def scaling() -> dict:
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    one = throughput_worker("single")
    launch = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=2,
        run_id="bench",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        start_method="spawn",
        monitor_interval=0.2,
    )
    two = elastic_launch(launch, throughput_worker)("ddp")[0]
    return {
        "global_batch": BATCH,
        "samples_per_s_1_process": one,
        "samples_per_s_2_processes_ddp": two,
        "speedup_2_vs_1": two / one,
        "note": "each process runs with OMP_NUM_THREADS threads; on a CPU machine the "
        "ranks share its cores",
    }


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    device = choose_device("auto")
    result = {
        "benchmark": "train_overhead",
        "device": str(device),
        "machine": describe_machine(),
        "omp_num_threads": torch.get_num_threads(),
        "model": f"MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}, AdamW, fp32",
        "data": f"{ROWS} in-memory rows, batch {BATCH}",
        "overhead": overhead(device),
        "scaling": scaling(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    o, s = result["overhead"], result["scaling"]
    print(
        f"deepfleet / hand-written epoch time: {o['ratio_median']:.3f} "
        f"(per repeat {', '.join(f'{r:.3f}' for r in o['ratio_per_repeat'])})"
    )
    print(
        f"samples/s: 1 process {s['samples_per_s_1_process']:.0f}, 2 processes ddp "
        f"{s['samples_per_s_2_processes_ddp']:.0f} (x{s['speedup_2_vs_1']:.2f})"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
