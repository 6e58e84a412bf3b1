"""The CUDA paths: events, synchronisation, bf16 + channels_last + compile, NVML energy, peaks.

Skipped without CUDA (the gpu marker)."""

from __future__ import annotations

import pytest
import torch

from deepfleet.bench import (
    InferOptions,
    PhaseTimer,
    TrainOptions,
    bench_infer,
    bench_train,
    synthetic_workload,
    table_peak,
)
from deepfleet.energy import meter_for

pytestmark = pytest.mark.gpu


def test_cuda_events_time_queued_work():
    device = torch.device("cuda", 0)
    a = torch.randn(4096, 4096, device=device)
    timer = PhaseTimer(device)
    timer.begin()
    for _ in range(10):
        a = a @ a / 64  # queued: the Python calls return long before the GPU is done
    timer.mark("matmuls")
    spans = timer.durations()
    assert spans["matmuls"] > 10 * 2 * 4096**3 / 2e15  # slower than 2 PFLOP/s fp32: real work


def test_resnet_bf16_channels_last_compiled(tmp_path):
    device = torch.device("cuda", 0)
    opts = TrainOptions(
        batch_size=64,
        steps=5,
        repeats=2,
        warmup=3,
        precision="bf16",
        channels_last=True,
        compile=True,
        data_on_device=True,
    )
    result = bench_train(synthetic_workload("resnet18-32"), device, opts, meter=meter_for(device))
    assert result["device_name"] == torch.cuda.get_device_name(0)
    assert result["precision"] == "bf16" and 0 < result["mfu"] < 1
    phases = sum(p["median_ms"] for p in result["phases"].values()) / 1e3
    assert phases == pytest.approx(result["step_seconds"]["median"], rel=0.5)
    assert result["peak_memory"]["bytes"] > 0
    if table_peak(torch.cuda.get_device_name(0), "bf16") is not None:
        assert result["peak"]["source"].startswith("table")
    energy = result["energy"]
    if energy["measured"]:
        assert (
            energy["source"].startswith("zeus: NVML") and energy["joules_per_sample"]["median"] > 0
        )
    else:
        assert energy["note"].startswith("not measured")
    rows, _ = bench_infer(
        synthetic_workload("resnet18-32"),
        device,
        InferOptions(batch_sizes=[1, 32], iterations=5, backends=["torch"], precision="bf16"),
        tmp_path,
    )
    assert [r["batch_size"] for r in rows] == [1, 32]
