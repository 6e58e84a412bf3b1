"""The inference benchmark: latency percentiles and throughput over batch sizes, per backend."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepfleet.bench._onnx import INPUT, ort_providers, ort_session
from deepfleet.bench._progress import BenchProgress, silent_progress
from deepfleet.bench._stats import latency_summary
from deepfleet.bench._timer import synchronize
from deepfleet.bench._train import TrainOptions, prepare_model
from deepfleet.bench._workloads import Workload

BACKENDS = ("torch", "onnxruntime")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class InferOptions:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    iterations: int = 30
    warmup: int = 5
    backends: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    precision: str | None = None
    channels_last: bool = False
    threads: int | None = None  # onnxruntime intra-op threads on the CPU (None: its default)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure_precision(device: torch.device, precision: str) -> Callable[[], Any]:
    """Set TF32 on CUDA as asked; return a factory of the autocast context for inference."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def _time_calls(
    call: Callable[[], None], device: torch.device, iterations: int, warmup: int
) -> list[float]:
    for _ in range(warmup):
        call()
    latencies = []
    for _ in range(iterations):
        synchronize(device)
        started = time.perf_counter()
        call()
        synchronize(device)  # the result is only ready once the device is done
        latencies.append(time.perf_counter() - started)
    return latencies


def _row(
    backend: str, device: torch.device, batch: int, latencies: list[float], note: str
) -> dict[str, Any]:
    return {
        "backend": backend,
        "device": str(device),
        "batch_size": batch,
        **latency_summary(latencies),
        "samples_per_s": batch * len(latencies) / sum(latencies),
        "note": note,
    }


def _torch_caller(workload: Workload, device: torch.device, opts: InferOptions):
    model = prepare_model(workload, device, TrainOptions(channels_last=opts.channels_last)).eval()
    autocast = configure_precision(device, opts.precision or workload.precision)

    def make(x: torch.Tensor) -> Callable[[], None]:
        x = x.to(device)
        if opts.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)

        @torch.inference_mode()
        def call() -> None:
            with autocast():
                model(x)

        return call

    return make, "inputs already on the device"


def _ort_caller(workload: Workload, device: torch.device, folder: Path, threads: int | None):
    providers = ort_providers(device)
    if providers is None:
        return None, f"onnxruntime has no execution provider for {device} here"
    path = folder / f"{workload.name.replace(':', '-')}.onnx"
    if not path.is_file():
        # imported here: the deploy package is not needed unless onnxruntime is benchmarked
        from deepfleet.deploy._onnx import export_onnx

        # not checked against PyTorch: this graph is only timed (the tests compare it)
        export_onnx(
            prepare_model(workload, torch.device("cpu"), TrainOptions()),
            path,
            tuple(workload.input_shape),
            input_name=INPUT,
            check=False,
            vocab=workload.num_classes if workload.is_tokens else None,
        )
    session = ort_session(path, providers, threads)
    name = session.get_inputs()[0].name

    def make(x: torch.Tensor) -> Callable[[], None]:
        feed = {name: x.numpy().astype(np.int64 if workload.is_tokens else np.float32)}
        return lambda: session.run(None, feed)

    note = "fp32 ONNX graph; inputs from host memory" + (
        " (host-to-device copy included)" if device.type == "cuda" else ""
    )
    return make, note


def bench_infer(
    workload: Workload,
    device: torch.device,
    opts: InferOptions,
    folder: Path,
    *,
    progress: BenchProgress | None = None,
) -> tuple[list[dict], list[str]]:
    """Rows per (backend, batch size), and notes on backends that could not run."""
    progress = progress or silent_progress()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    generator = torch.Generator().manual_seed(1)
    for backend in opts.backends:
        if backend == "torch":
            make, note = _torch_caller(workload, device, opts)
        else:
            make, note = _ort_caller(workload, device, folder, opts.threads)
        if make is None:
            notes.append(f"{backend} on {device}: skipped, {note}")
            continue
        progress.start(f"{device} {backend} inference", len(opts.batch_sizes))
        for batch in opts.batch_sizes:
            x, _ = workload.random_batch(batch, generator)
            latencies = _time_calls(make(x), device, opts.iterations, opts.warmup)
            rows.append(_row(backend, device, batch, latencies, note))
            progress.advance()
    return rows, notes
