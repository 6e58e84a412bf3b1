"""The training benchmark: throughput, step-time split, FLOPs/MFU, peak memory and energy."""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from deepfleet.bench._energy import EnergyMeter, NoMeter, meter_info
from deepfleet.bench._flops import train_step_flops
from deepfleet.bench._peak import Peak, PeakProbe, known_peak, mfu
from deepfleet.bench._progress import BenchProgress, silent_progress
from deepfleet.bench._stats import summarize
from deepfleet.bench._timer import PhaseTimer, wall_timer
from deepfleet.bench._workloads import Workload
from deepfleet.errors import UserError

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainOptions:
    """How to measure: `warmup` untimed steps, then `repeats` timed runs of `steps` steps."""

    batch_size: int | None = None  # None: the workload's own
    steps: int = 20
    repeats: int = 5
    warmup: int = 5
    precision: str | None = None  # None: the workload's own (fp32 for synthetic ones)
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    data_on_device: bool = False  # synthetic data: keep the random pool on the device

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure_precision(device: torch.device, precision: str) -> Callable[[], Any]:
    """Set TF32 on CUDA as asked; return a factory of the autocast context for the step."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
    dtype = _AUTOCAST.get(precision)
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def prepare_model(workload: Workload, device: torch.device, opts: TrainOptions) -> nn.Module:
    torch.manual_seed(opts.seed)
    model = workload.build().to(device)
    if opts.channels_last and workload.is_image:
        model = model.to(memory_format=torch.channels_last)
    return model


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {
            "bytes": torch.cuda.max_memory_allocated(device),
            "what": "torch.cuda.max_memory_allocated (tensors on the GPU)",
        }
    # ru_maxrss is KiB on Linux, bytes on macOS; it covers the whole process's lifetime.
    scale = 1 if sys.platform == "darwin" else 1024
    return {
        "bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
        "what": "process peak resident set size (ru_maxrss), whole process lifetime",
    }


class StepRunner:
    """One training step with phase marks; `grad_sync` adds a timed communication phase."""

    def __init__(
        self,
        workload: Workload,
        model: nn.Module,
        device: torch.device,
        opts: TrainOptions,
        precision: str,
        grad_sync: Callable[[nn.Module], None] | None = None,
    ) -> None:
        self.workload, self.device, self.opts = workload, device, opts
        self.model = model
        self.optimizer = workload.optimizer(model)
        self.autocast = configure_precision(device, precision)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=precision == "fp16" and device.type == "cuda"
        )
        self.grad_sync = grad_sync

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A no-op for a batch already there in the right layout."""
        x = x.to(self.device, non_blocking=True)
        if self.opts.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=True)

    def host_preparation(self) -> Callable | None:
        """What the data source does to each batch before the step sees it."""
        if self.device.type != "cuda":
            return None
        if self.opts.data_on_device:
            return lambda batch: self.to_device(*batch)
        # Pinned host memory lets the copy run asynchronously, as a DataLoader with
        # pin_memory=True would hand it over.
        return lambda batch: (batch[0].pin_memory(), batch[1].pin_memory())

    def step(self, data: Iterator[tuple[torch.Tensor, torch.Tensor]], timer: PhaseTimer) -> None:
        timer.begin()
        x, y = self.to_device(*next(data))  # fetching the batch counts as data time
        timer.mark("data")
        with self.autocast():
            loss = self.workload.loss_fn(self.model(x), y)
        timer.mark("forward")
        self.scaler.scale(loss).backward()
        timer.mark("backward")
        if self.grad_sync is not None:
            self.grad_sync(self.model)
            timer.mark("communication")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        timer.mark("optimizer")


def _data_kind(workload: Workload, device: torch.device, opts: TrainOptions) -> str:
    if workload.real_data is not None:
        return "the job's training split, copied to the device every step"
    if opts.data_on_device and device.type == "cuda":
        return "a pool of random batches kept on the device"
    return "a pool of random batches in host memory, copied to the device every step"


def _phase_summary(per_step: list[dict[str, float]]) -> dict[str, Any]:
    phases = list(per_step[0]) if per_step else []
    medians = {p: summarize([s.get(p, 0.0) for s in per_step])["median"] for p in phases}
    total = sum(medians.values()) or 1.0
    return {p: {"median_ms": medians[p] * 1e3, "share": medians[p] / total} for p in phases}


def step_flops(workload: Workload, device: torch.device, opts: TrainOptions) -> int:
    """FLOPs of one training step of one process, counted on `device` with the kernels it runs."""
    model = prepare_model(workload, device, opts)
    x, y = next(workload.batches(opts.batch_size or workload.batch_size, seed=opts.seed))
    runner = StepRunner(workload, model, device, opts, opts.precision or workload.precision)
    return train_step_flops(model, *runner.to_device(x, y), workload.loss_fn)


def bench_train(
    workload: Workload,
    device: torch.device,
    opts: TrainOptions,
    *,
    meter: EnergyMeter | None = None,
    progress: BenchProgress | None = None,
    peak: Peak | None = None,
    grad_sync: Callable[[nn.Module], None] | None = None,
    world_size: int = 1,
    seed_offset: int = 0,
    flops_per_step: int | None = None,
) -> dict[str, Any]:
    """Measure training on one device (one process of `world_size`); returns a result dict.

    flops_per_step (one process's) is counted here unless given: scaling workers get it from
    the parent, so they need not load the counter's dependencies.
    """
    meter = meter or NoMeter("not measured: no meter was given")
    progress = progress or silent_progress()
    if opts.compile and opts.warmup < 1:
        raise UserError("--compile needs --warmup >= 1, so that compiling is not timed")
    precision = opts.precision or workload.precision
    batch_size = opts.batch_size or workload.batch_size
    model = prepare_model(workload, device, opts)
    runner = StepRunner(workload, model, device, opts, precision, grad_sync)
    data = workload.batches(
        batch_size, seed=opts.seed + seed_offset, prepare=runner.host_preparation()
    )
    flops = flops_per_step
    if flops is None:  # counted eagerly: the counter does not see inside compiled graphs
        flops = train_step_flops(model, *runner.to_device(*next(data)), workload.loss_fn)
    if opts.compile:
        runner.model = torch.compile(model)

    progress.start(f"{device} warm-up", opts.warmup)
    for _ in range(opts.warmup):  # untimed: compilation, allocator growth, kernel choice
        runner.step(data, PhaseTimer(device))
        progress.advance()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    seconds: list[float] = []
    joules: list[float] = []
    per_step: list[dict[str, float]] = []
    peak = peak or known_peak(device, precision)
    probe = PeakProbe(device, precision) if peak is None else None
    progress.start(f"{device} {opts.repeats}x{opts.steps} steps", opts.repeats * opts.steps)
    for _ in range(opts.repeats):
        timers = [PhaseTimer(device) for _ in range(opts.steps)]
        if meter.available:
            meter.begin()
        with wall_timer(device) as elapsed:
            for timer in timers:
                runner.step(data, timer)
                if not timer.cuda:
                    progress.advance()
        if meter.available:
            joules.append(meter.end())
        if timers and timers[0].cuda:
            progress.advance(opts.steps)
        seconds.append(elapsed[0])
        per_step += [t.durations() for t in timers]
        if probe is not None:
            probe.probe()  # outside the timed region

    samples = batch_size * opts.steps * world_size
    step_s = summarize([s / opts.steps for s in seconds])
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        "batch_size": batch_size,
        "data": _data_kind(workload, device, opts),
        "world_size": world_size,
        "steps_per_repeat": opts.steps,
        "repeats": opts.repeats,
        "warmup_steps": opts.warmup,
        "samples_per_s": summarize([samples / s for s in seconds]),
        "step_seconds": step_s,
        "phases": _phase_summary(per_step),
        "flops_per_step": flops * world_size,  # all processes together
        "peak_memory": _peak_memory(device),
    }
    if workload.is_tokens:
        result["tokens_per_s"] = summarize(
            [samples * workload.tokens_per_sample / s for s in seconds]
        )
    peak = peak or probe.best()
    result["peak"] = peak.to_dict()
    # Whole-world figures: every process does `flops` per step on its own device.
    result["achieved_flops_per_s"] = flops * world_size / step_s["median"]
    result["mfu"] = mfu(flops * world_size, step_s["median"], peak.flops_per_s * world_size)
    if result["mfu"] > 1:
        result["mfu_note"] = (
            "above 100 %: the measured peak is lower than what the workload "
            "reached, so the machine was busier while probing; distrust it"
        )
    result["energy"] = energy_summary(meter, joules, seconds, samples)
    return result


def energy_summary(
    meter: EnergyMeter, joules: list[float], seconds: list[float], samples_per_repeat: int
) -> dict[str, Any]:
    """Joules per sample and average watts over the timed repeats, or why there are none."""
    info = meter_info(meter)
    if not meter.available or not joules:
        return {**info, "measured": False}
    return {
        **info,
        "measured": True,
        "joules_per_sample": summarize([j / samples_per_repeat for j in joules]),
        "watts": summarize([j / s for j, s in zip(joules, seconds, strict=True)]),
        "joules_per_repeat": joules,
    }
