"""FLOP counting against the analytic count of known layers, and MFU arithmetic."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deepfleet.bench import (
    count_flops,
    device_peak,
    forward_flops,
    measure_matmul_peak,
    mfu,
    table_peak,
    train_step_flops,
)
from deepfleet.models import ZOO


def test_linear_forward_and_train_step():
    layer = nn.Linear(64, 32)
    x = torch.randn(8, 64)
    assert forward_flops(layer, x) == 2 * 8 * 64 * 32
    # Backward of the first layer needs only the weight gradient (the input needs none).
    assert train_step_flops(layer, x, torch.randint(0, 32, (8,)), F.cross_entropy) == (
        2 * (2 * 8 * 64 * 32)
    )
    two = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    expected = 2 * (2 * 8 * 64 * 32) + 3 * (2 * 8 * 32 * 10)
    assert train_step_flops(two, x, torch.randint(0, 10, (8,)), F.cross_entropy) == expected


def test_conv2d_forward():
    conv = nn.Conv2d(3, 16, kernel_size=3, stride=2, padding=1)
    x = torch.randn(4, 3, 32, 32)
    out_h = out_w = 16
    assert forward_flops(conv, x) == 2 * 4 * 16 * out_h * out_w * 3 * 3 * 3
    grouped = nn.Conv2d(8, 8, kernel_size=3, padding=1, groups=4)
    assert forward_flops(grouped, torch.randn(1, 8, 10, 10)) == 2 * 8 * 10 * 10 * (8 // 4) * 9


def test_matmul_and_bmm():
    a, b = torch.randn(7, 5), torch.randn(5, 3)
    assert count_flops(torch.matmul, a, b) == 2 * 7 * 5 * 3
    assert count_flops(torch.bmm, torch.randn(4, 7, 5), torch.randn(4, 5, 3)) == 4 * 2 * 7 * 5 * 3


def test_decoder_counts_attention_on_cpu():
    batch, length, dim, heads, vocab = 2, 16, 32, 2, 100
    model = ZOO["gpt"]((length,), vocab, dim=dim, layers=1, heads=heads)
    tokens = torch.randint(0, vocab, (batch, length))
    linear = (
        2 * batch * length * dim * 3 * dim
        + 2 * batch * length * dim * dim
        + 2 * 2 * batch * length * dim * 4 * dim
        + 2 * batch * length * dim * vocab
    )
    attention = 2 * (2 * batch * heads * length * length * (dim // heads))  # QK^T and AV
    assert forward_flops(model, tokens) == linear + attention


@pytest.mark.parametrize(("name", "published_gmacs"), [("resnet18", 1.814), ("resnet50", 4.089)])
def test_resnet_flops_match_published_counts(name, published_gmacs):
    """torchvision's model cards list 1.81 and 4.09 GMACs (called GFLOPS there) at 224x224."""
    with torch.device("meta"):  # shapes only: counting needs no real arithmetic
        model = ZOO[name]((3, 224, 224), 1000).eval()
        flops = forward_flops(model, torch.randn(1, 3, 224, 224))
    assert flops == pytest.approx(2 * published_gmacs * 1e9, rel=0.01)


def test_mfu_arithmetic():
    # 1 TFLOP per step in 10 ms is 100 TFLOP/s: 10 % of a 1 PFLOP/s device.
    assert mfu(1e12, 0.01, 1e15) == pytest.approx(0.10)
    h100 = table_peak("NVIDIA H100 80GB HBM3", "bf16")
    assert mfu(989.4e12 * 0.5, 1.0, h100.flops_per_s) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mfu(1e12, 0.0, 1e15)


@pytest.mark.parametrize(
    ("device_name", "precision", "tflops", "entry"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4, "H100 SXM"),
        ("NVIDIA H100 PCIe", "fp16", 756.0, "H100 PCIe"),
        ("NVIDIA H100 NVL", "tf32", 417.5, "H100 NVL"),
        ("NVIDIA H200", "fp32", 66.9, "H200 SXM"),
        ("NVIDIA A100-SXM4-80GB", "tf32", 156.0, "A100"),
        ("NVIDIA L40S", "bf16", 362.05, "L40S"),
        ("NVIDIA L4", "bf16", 121.0, "L4"),
    ],
)
def test_peak_table(device_name, precision, tflops, entry):
    peak = table_peak(device_name, precision)
    assert peak.flops_per_s == pytest.approx(tflops * 1e12)
    assert entry in peak.source and not peak.measured


def test_unknown_devices_fall_back_to_a_measured_peak():
    assert table_peak("Tesla T4", "fp16") is None
    with pytest.raises(ValueError):
        table_peak("NVIDIA H100", "int8")
    peak = measure_matmul_peak(torch.device("cpu"), "fp32", size=256, repeats=2)
    assert peak.measured and peak.source.startswith("measured") and peak.flops_per_s > 1e6
    assert device_peak(torch.device("cpu"), "fp32").measured
