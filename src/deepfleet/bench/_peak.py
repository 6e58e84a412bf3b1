"""Peak FLOP/s of a device, and model FLOPs utilisation (MFU) against it.

Peaks are the dense (no sparsity) tensor-core figures from NVIDIA's data sheets. A device not in
the table (every CPU, and unknown GPUs) gets a measured peak: the best large-matmul rate seen.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

import torch

TERA = 1e12

# (pattern on torch.cuda.get_device_name, name, {precision: TFLOP/s}); first match wins, so the
# specific variants (NVL, PCIe) come before the SXM part they share a prefix with.
PEAK_TABLE: list[tuple[str, str, dict[str, float]]] = [
    (r"H100.*NVL", "H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H100.*PCIe", "H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    (r"H100", "H100 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"H200.*NVL", "H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"H200", "H200 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    (r"A100", "A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
    (r"L40S", "L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6}),
    (r"\bL4\b", "L4", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3}),
]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class Peak:
    """A peak rate and where it came from: "table: H100 SXM bf16" or "measured: ..."."""

    flops_per_s: float
    source: str
    measured: bool

    def to_dict(self) -> dict:
        return asdict(self)


def table_peak(device_name: str, precision: str) -> Peak | None:
    """The data-sheet peak for a GPU name, or None when the GPU is not in the table."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    for pattern, name, peaks in PEAK_TABLE:
        if re.search(pattern, device_name):
            return Peak(peaks[precision] * TERA, f"table: {name} {precision} (dense)", False)
    return None


_DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def measure_matmul_peak(
    device: torch.device, precision: str = "fp32", size: int | None = None, repeats: int = 5
) -> Peak:
    """The best rate of size x size matmuls (2 n^3 FLOPs each) over a few timed repeats."""
    from deepfleet.bench._timer import synchronize

    size = size or (8192 if device.type == "cuda" else 1024)
    dtype = _DTYPES[precision]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.float32  # CPUs have no fast fp16 matmul; measure what would run
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: library initialisation, kernel selection
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = max(best, 2 * size**3 / (time.perf_counter() - started))
    return Peak(best, f"measured: best of {repeats} {size}x{size} {dtype} matmuls", True)


def known_peak(device: torch.device, precision: str) -> Peak | None:
    """The table peak of a known GPU; None for CPUs and GPUs not in the table."""
    if device.type == "cuda":
        return table_peak(torch.cuda.get_device_name(device), precision)
    return None


class PeakProbe:
    """A measured peak sampled several times during a benchmark, keeping the best.

    On a shared machine a peak measured once, at a busy moment, can be lower than what the
    workload reaches a minute later (an MFU above 100 %); probing between the timed repeats
    samples the machine in the same conditions as the measurement.
    """

    def __init__(self, device: torch.device, precision: str) -> None:
        self.device, self.precision = device, precision
        self.probes: list[Peak] = []

    def probe(self) -> None:
        self.probes.append(measure_matmul_peak(self.device, self.precision, repeats=2))

    def best(self) -> Peak:
        if not self.probes:
            self.probe()
        best = max(self.probes, key=lambda p: p.flops_per_s)
        size = "1024x1024" if self.device.type == "cpu" else "8192x8192"
        return Peak(
            best.flops_per_s,
            f"measured: best {size} {self.precision} matmul of "
            f"{len(self.probes)} probes taken between the timed repeats",
            True,
        )


def device_peak(device: torch.device, precision: str) -> Peak:
    """Table peak for known GPUs, otherwise a measured matmul peak."""
    return known_peak(device, precision) or measure_matmul_peak(device, precision)


def mfu(flops_per_step: float, step_seconds: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the peak (0.45 means 45 %)."""
    if step_seconds <= 0 or peak_flops_per_s <= 0:
        raise ValueError("step time and peak must be positive")
    return flops_per_step / step_seconds / peak_flops_per_s
