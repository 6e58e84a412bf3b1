"""Peak memory of one training step of the gpt with and without activation checkpointing, on
CPU, at the same batch. Baseline: the same model and batch with no checkpointing.

The peak is the allocator's, read from torch.profiler(profile_memory=True): every operator's
own allocations minus frees, and every free outside an operator, summed in time order from
the start of the forward pass to the end of the backward pass (the weights and the batch,
allocated before, are not counted). Each setting also records the step's seconds (median of
--repeats), since recomputing costs a second forward pass of the checkpointed blocks.
Writes benchmarks/results/activation_memory.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from deepfleet._atomic import write_json_atomic
from deepfleet.devices import describe_machine
from deepfleet.models import gpt
from deepfleet.parallel import checkpoint_blocks
from deepfleet.tasks import CausalLMTask

RESULTS = Path(__file__).resolve().parent / "results" / "activation_memory.json"
SETTINGS: list[str | int] = ["none", 2, "full"]


def _model(args: argparse.Namespace, setting: str | int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = gpt((args.context,), args.vocab, dim=args.dim, layers=args.layers, heads=args.heads)
    checkpoint_blocks(model, setting)
    return model


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    CausalLMTask().loss(model(x), y).backward()


def peak_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(model, x, y)
    changes = sorted(
        (
            e.time_range.start,
            e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage,
        )
        for e in prof.events()
    )
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.batch, args.context + 1), generator=g)
    x, y = tokens[:, :-1], tokens[:, 1:]
    rows = {}
    for setting in SETTINGS:
        model = _model(args, setting)
        _step(model, x, y)  # warm-up: first-call allocations are not the step's
        model.zero_grad(set_to_none=True)
        peak = peak_bytes(model, x, y)
        seconds = []
        for _ in range(args.repeats):
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            _step(model, x, y)
            seconds.append(time.perf_counter() - started)
        rows[str(setting)] = {
            "peak_activation_mib": peak / 2**20,
            "step_seconds_median": statistics.median(seconds),
        }
        print(f"activation_checkpointing={setting}: {rows[str(setting)]}")
    base = rows["none"]
    for row in rows.values():
        row["peak_vs_none"] = row["peak_activation_mib"] / base["peak_activation_mib"]
        row["seconds_vs_none"] = row["step_seconds_median"] / base["step_seconds_median"]
    result = {
        "benchmark": "activation_memory",
        "what": "peak allocator bytes of one gpt training step (forward + backward), CPU, "
        "from torch.profiler's memory records; step seconds median",
        "baseline": "the same model and batch with activation_checkpointing = none",
        "model": {k: getattr(args, k) for k in ("dim", "layers", "heads", "vocab", "context")},
        "batch": args.batch,
        "threads": 1,
        "settings": rows,
        "machine": describe_machine(),
    }
    write_json_atomic(RESULTS, result)
    print(json.dumps({k: v["peak_vs_none"] for k, v in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
