"""Scaling efficiency over process counts: each count is a real launch through deepfleet's
launcher (the torch.distributed.run elastic agent), each rank running the Trainer's step."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from deepfleet.bench._peak import Peak
from deepfleet.bench._progress import BenchProgress, silent_progress
from deepfleet.bench._train import TrainOptions
from deepfleet.bench._workloads import Workload
from deepfleet.errors import UserError
from deepfleet.parallel import LaunchOptions, start_workers

LAUNCHER = (
    "torch.distributed.run elastic agent (c10d rendezvous on 127.0.0.1), started as "
    "`deepfleet train --nproc N` starts its workers"
)


def _launch(nproc: int, spec: dict[str, Any], logs: Path) -> dict[str, Any]:
    from deepfleet.bench._worker import scaling_worker

    returns = start_workers(
        LaunchOptions(nproc=nproc),
        scaling_worker,
        spec,
        run_name=f"bench-scaling-{nproc}-{os.getpid()}",
        what=f"scaling run with {nproc} processes",
        log_dir=logs,  # the workers' output is kept there; a failure quotes its tail
    )
    return returns[0]


def efficiencies(throughputs: dict[int, float]) -> dict[int, float]:
    """Per-process throughput relative to the smallest process count (1.0 = linear scaling)."""
    base = min(throughputs)
    per_process = throughputs[base] / base
    return {n: (t / n) / per_process for n, t in sorted(throughputs.items())}


def bench_scaling(
    workload: Workload,
    device_type: str,
    nprocs: list[int],
    opts: TrainOptions,
    peak: Peak,
    flops_per_step: int,
    *,
    progress: BenchProgress | None = None,
) -> dict[str, Any]:
    """Weak scaling: every process keeps the per-process batch size; returns rows per count."""
    progress = progress or silent_progress()
    if any(n < 1 for n in nprocs):
        raise UserError("--nproc: process counts must be >= 1")
    notes: list[str] = []
    if device_type == "cuda":
        visible = torch.cuda.device_count()
        if too_many := [n for n in nprocs if n > visible]:
            notes.append(f"skipped nproc {too_many}: only {visible} CUDA device(s) visible")
        nprocs = [n for n in nprocs if n <= visible]
    threads = None
    if device_type == "cpu":
        # Every run of the sweep gets the same threads per process, so a process count is the
        # only thing that changes (weak scaling); the largest count fills the cores.
        cores = os.cpu_count() or 1
        threads = max(1, cores // max(nprocs))
        notes.append(f"{threads} intra-op thread(s) per process at every count ({cores} cores)")
        if cores < max(nprocs):
            notes.append(
                f"{max(nprocs)} processes on {cores} CPU cores: the cores are "
                "oversubscribed, so efficiency falls"
            )
    results: dict[int, dict[str, Any]] = {}
    progress.start(f"scaling on {device_type}", len(nprocs))
    spec = {
        "workload": workload.spec,
        "device": device_type,
        "train": opts.to_dict(),
        "peak": peak.to_dict(),
        "flops_per_step": flops_per_step,
        "threads_per_rank": threads,
    }
    with tempfile.TemporaryDirectory(prefix="deepfleet-scaling-") as tmp:
        for n in sorted(set(nprocs)):
            logs = Path(tmp) / f"logs-{n}"
            try:
                results[n] = _launch(n, spec, logs)
            except UserError as err:
                # The agent picks a free port and the workers bind it later; on a busy host
                # another process can take it in between. One retry; a second failure is real.
                notes.append(f"{err}; retried once")
                results[n] = _launch(n, spec, logs)
            progress.advance()
    eff = efficiencies({n: r["samples_per_s"]["median"] for n, r in results.items()})
    rows = [
        {
            "nproc": n,
            "samples_per_s": r["samples_per_s"],
            "step_seconds": r["step_seconds"],
            "phases": r["phases"],
            "efficiency": eff[n],
            "mfu": r["mfu"],
            "threads_per_rank": r["threads_per_rank"],
            "rank_samples_per_s": r["rank_samples_per_s"],
            # the Trainer's set-up in the workers: its strategy and numeric mode
            "strategy": r["strategy"],
            "precision": r["precision"],
            "tf32": r["tf32"],
        }
        for n, r in sorted(results.items())
    ]
    return {
        "device": device_type,
        "launcher": LAUNCHER,
        "baseline_nproc": min(results) if results else None,
        "per_process_batch_size": opts.batch_size or workload.batch_size,
        "rows": rows,
        "notes": notes,
    }
