"""The training benchmark: throughput, step-time split, FLOPs/MFU, peak memory and energy."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepfleet.bench._flops import train_step_flops
from deepfleet.bench._peak import Peak, PeakProbe, known_peak, mfu
from deepfleet.bench._progress import BenchProgress, silent_progress
from deepfleet.bench._stats import summarize
from deepfleet.bench._timer import PhaseTimer, wall_timer
from deepfleet.bench._workloads import Workload
from deepfleet.config import ProfileSection, TrainSection
from deepfleet.energy import EnergyMeter, NoMeter, meter_info
from deepfleet.errors import UserError
from deepfleet.parallel import DistEnv
from deepfleet.train import Trainer, apply_freeze, build_optimizer, build_scheduler
from deepfleet.train._profile import StepProfiler


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
    profile: bool = False  # --profile: one more, untimed repeat under torch.profiler

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def train_config(workload: Workload, opts: TrainOptions, world_size: int = 1) -> TrainSection:
    """The [train] table the bench's Trainer runs: the job's own (a synthetic workload: the
    defaults of `deepfleet train`), with the bench's batch size, one optimizer step per
    batch, and --precision, --channels-last and --compile when given. --precision fp32 means
    strict fp32 (no TF32), tf32 fp32 with TF32 on; without it, precision and TF32 are the
    job's, as `deepfleet train` runs them."""
    base = workload.train_section()
    update: dict[str, Any] = {
        "batch_size": opts.batch_size or workload.batch_size,
        "accumulation_steps": 1,
        "phases": base.phases[:1],
        "channels_last": (opts.channels_last or base.channels_last) and workload.is_image,
        "compile": opts.compile or base.compile,
        # One process trains alone; several run the job's strategy (auto: ddp or fsdp).
        "strategy": "single" if world_size == 1 else base.strategy,
    }
    if opts.precision in ("fp32", "tf32"):
        update.update(precision="fp32", tf32=opts.precision == "tf32")
    elif opts.precision is not None:
        update["precision"] = opts.precision
    return base.model_copy(update=update)


def numeric_mode(trainer: Trainer) -> str:
    """What the step computes in: bf16 or fp16 autocast, else fp32 with or without TF32."""
    precision = trainer.config.precision
    if precision != "fp32":
        return precision
    return "tf32" if trainer.tf32 else "fp32"


class _GradReady:
    """Marks when the last gradient of a backward pass is accumulated. Under ddp the time from
    there to the end of backward is the gradient all-reduce that backward could not hide."""

    def __init__(self, params: list[nn.Parameter], timer_now: Callable[[], object]) -> None:
        self.count, self.left, self.stamp = len(params), len(params), None
        self.now = timer_now
        self.handles = [p.register_post_accumulate_grad_hook(self._hook) for p in params]

    def _hook(self, param: nn.Parameter) -> None:
        self.left -= 1
        if self.left == 0:  # one clock reading per step, at the last gradient
            self.stamp = self.now()

    def reset(self, timer_now: Callable[[], object]) -> None:
        self.left, self.stamp, self.now = self.count, None, timer_now

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class StepRunner:
    """The Trainer's own training step (Trainer.train_step) with phase marks."""

    def __init__(self, trainer: Trainer, opts: TrainOptions, steps: int) -> None:
        self.trainer, self.opts, self.device = trainer, opts, trainer.device
        # The first phase as fit() starts it: freezing, the strategy's setup, its optimizer
        # and schedule (lr scaling aside: it changes no timing).
        phase = trainer.config.phases[0]
        apply_freeze(trainer.model, phase.freeze)
        trainer.strategy.setup_phase()
        self.optimizer = build_optimizer(phase, trainer.strategy.module)
        self.scheduler = build_scheduler(phase, self.optimizer, max(steps, 1))
        trainer.model.train()
        trainer.strategy.train_model.train()
        self.ready = None
        if trainer.topology.strategy == "ddp":
            params = [p for p in trainer.strategy.module.parameters() if p.requires_grad]
            self.ready = _GradReady(params, time.perf_counter)

    def to_device(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_device(x, y, self.device, self.trainer.config.channels_last)

    def host_preparation(self) -> Callable | None:
        """What the data source does to each batch before the step sees it."""
        if self.device.type != "cuda":
            return None
        if self.opts.data_on_device:
            return lambda batch: self.to_device(*batch)
        # Pinned host memory lets the copy run asynchronously, as a DataLoader with
        # pin_memory=True would hand it over.
        return lambda batch: (batch[0].pin_memory(), batch[1].pin_memory())

    def _marks(self, timer: PhaseTimer) -> Callable[[str], None]:
        if self.ready is None:
            return timer.mark
        self.ready.reset(timer.now)
        ready = self.ready

        def mark(phase: str) -> None:
            if phase == "backward" and ready.stamp is not None:
                timer.mark("backward", at=ready.stamp)
                timer.mark("communication")
            else:
                timer.mark(phase)

        return mark

    def step(self, data: Iterator[tuple[torch.Tensor, torch.Tensor]], timer: PhaseTimer) -> None:
        timer.begin()
        x, y = self.to_device(*next(data))  # fetching the batch counts as data time
        timer.mark("data")
        self.trainer.train_step(x, y, self.optimizer, self.scheduler, mark=self._marks(timer))

    def close(self) -> None:
        if self.ready is not None:
            self.ready.remove()


def _data_kind(workload: Workload, device: torch.device, opts: TrainOptions) -> str:
    if workload.real_data is not None:
        return "the job's training split, copied to the device every step"
    if opts.data_on_device and device.type == "cuda":
        return "a pool of random batches kept on the device"
    return "a pool of random batches in host memory, copied to the device every step"


def _phase_summary(per_step: list[dict[str, float]]) -> dict[str, Any]:
    phases = list(dict.fromkeys(p for s in per_step for p in s))  # in step order
    medians = {p: summarize([s.get(p, 0.0) for s in per_step])["median"] for p in phases}
    total = sum(medians.values()) or 1.0
    return {p: {"median_ms": medians[p] * 1e3, "share": medians[p] / total} for p in phases}


def _to_device(
    x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """As the training loop moves a batch; a no-op for one already there."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def bench_trainer(
    workload: Workload,
    device: torch.device,
    opts: TrainOptions,
    env: DistEnv | None = None,
    flops: bool = True,
) -> tuple[Trainer, int | None]:
    """The Trainer the benchmark drives, built as `deepfleet train` builds it (strategy,
    autocast, gradient scaler, TF32), and the FLOPs of one step of one process, counted on
    the eager model before any strategy wraps it (when `flops`)."""
    env = env or DistEnv()
    config = train_config(workload, opts, env.world_size)
    model = prepare_model(workload, device, replace(opts, channels_last=config.channels_last))
    counted = None
    if flops:
        x, y = next(workload.batches(config.batch_size, seed=opts.seed))
        x, y = _to_device(x, y, device, config.channels_last)
        counted = train_step_flops(model, x, y, workload.loss_fn)
    trainer = Trainer(config, model, device, seed=opts.seed, task=workload.task, env=env)
    return trainer, counted


def step_figures(workload: Workload, device: torch.device, opts: TrainOptions) -> tuple[int, str]:
    """FLOPs of one training step of one process, counted on `device` with the kernels it
    runs, and the numeric mode the Trainer runs it in (fp32, tf32, bf16, fp16)."""
    trainer, flops = bench_trainer(workload, device, opts)
    return int(flops or 0), numeric_mode(trainer)


def bench_train(
    workload: Workload,
    device: torch.device,
    opts: TrainOptions,
    *,
    meter: EnergyMeter | None = None,
    progress: BenchProgress | None = None,
    peak: Peak | None = None,
    env: DistEnv | None = None,
    flops_per_step: int | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Measure training on one device (one process of `env`'s world) through the Trainer's
    own step; returns a result dict.

    flops_per_step (one process's) is counted here unless given: scaling workers get it from
    the parent, so they need not load the counter's dependencies.

    With opts.profile and a `profile_dir`, one more repeat runs under torch.profiler after
    the timed ones, so the profiler's overhead is in no reported figure.
    """
    env = env or DistEnv()
    meter = meter or NoMeter("not measured: no meter was given")
    progress = progress or silent_progress()
    world_size = env.world_size
    if train_config(workload, opts, world_size).compile and opts.warmup < 1:
        raise UserError("--compile needs --warmup >= 1, so that compiling is not timed")
    trainer, counted = bench_trainer(workload, device, opts, env, flops_per_step is None)
    flops = flops_per_step if flops_per_step is not None else counted
    config = trainer.config
    precision = numeric_mode(trainer)
    batch_size = config.batch_size
    runner = StepRunner(trainer, opts, opts.warmup + opts.repeats * opts.steps)
    data = workload.batches(
        batch_size, seed=opts.seed + env.rank, prepare=runner.host_preparation()
    )
    try:
        seconds, joules, per_step, peak = _measure(runner, data, opts, meter, progress, peak)
        profiled = _profile(runner, data, opts, profile_dir) if opts.profile else None
    finally:
        runner.close()
    samples = batch_size * opts.steps * world_size
    step_s = summarize([s / opts.steps for s in seconds])
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": precision,
        # What the Trainer set up, as its setup record in metrics.jsonl says it.
        "tf32": trainer.tf32,
        "train_precision": config.precision,
        "strategy": trainer.topology.strategy,
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
    if profiled is not None:
        result["profile"] = profiled
    return result


def _profile(
    runner: StepRunner,
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    opts: TrainOptions,
    folder: Path | None,
) -> dict[str, Any] | None:
    """One warm-up step and `opts.steps` recorded steps under torch.profiler, untimed: a
    Chrome trace and top_ops.md in `folder`; their names."""
    if folder is None:
        return None
    config = ProfileSection(wait=0, warmup=1, active=opts.steps, repeat=1)
    title = f"Top operators by self CPU time, {runner.device}, {opts.steps} training steps"
    with StepProfiler(config, runner.device, folder, title=title) as prof:
        for _ in range(config.warmup + config.active):
            runner.step(data, PhaseTimer(runner.device))
            prof.step()
    return {
        "traces": [t.name for t in prof.traces],
        "top_ops": prof.top_ops.name,
        "steps": opts.steps,
        "note": "one more repeat after the timed ones, under torch.profiler; no timing above "
        "includes it",
    }


def _measure(
    runner: StepRunner,
    data: Iterator[tuple[torch.Tensor, torch.Tensor]],
    opts: TrainOptions,
    meter: EnergyMeter,
    progress: BenchProgress,
    peak: Peak | None,
) -> tuple[list[float], list[float], list[dict[str, float]], Peak]:
    """Warm-up, then the timed repeats: seconds and joules per repeat, phases per step, and
    the peak (measured between the repeats when none is known)."""
    device = runner.device
    precision = numeric_mode(runner.trainer)
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
    return seconds, joules, per_step, peak or probe.best()


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
