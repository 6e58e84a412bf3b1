"""The training loop: phases, precision, accumulation, validation, best weights, checkpoints,
under any strategy (single, ddp, fsdp, pipeline). The loop never branches on the strategy."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepfleet._atomic import write_json_atomic
from deepfleet.config import PhaseSection, TrainSection
from deepfleet.data import SplitArrays, StreamLoader
from deepfleet.errors import UserError
from deepfleet.parallel import DistEnv, Topology, build_topology, fp16_scaler, make_strategy
from deepfleet.runs import RunPaths
from deepfleet.storage import Store
from deepfleet.tasks import ClassificationTask, Task, direction
from deepfleet.train._batches import ArrayBatches, StreamBatches, batch_source
from deepfleet.train._checkpoint import Checkpointer
from deepfleet.train._log import MetricsLog, NullProgress, ProgressSink
from deepfleet.train._optim import apply_freeze, build_optimizer, build_scheduler
from deepfleet.train._precision import autocast_factory, configure_tf32, to_channels_last
from deepfleet.train._profile import StepProfiler
from deepfleet.train._rng import rng_state, set_rng_state
from deepfleet.train._state import Position, TrainState
from deepfleet.train._system import SystemMonitor
from deepfleet.train._validate import run_split, split_batches
from deepfleet.weights import save_tensors

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "state.json"
TRAIN_CHECKPOINTS = "train"
PROFILE_DIR = Path("report") / "profile"  # in the run folder


@dataclass
class FitResult:
    epochs: int
    seconds: float
    best_epoch: int
    best_val_accuracy: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    already_finished: bool = False  # a resume found nothing left to train and wrote nothing
    monitor: str = "val_accuracy"  # the metric that chose the best epoch
    best_value: float | None = None  # its value at the best epoch
    stopped_early: bool = False  # early stopping ended training before the last epoch


def durable_checkpoints(checkpoint_dir: Path) -> Store | None:
    """The training checkpoints' storage when the run folder (checkpoint_dir's parent) is
    the working copy of a run at a URL; None for a run on a disk."""
    run = RunPaths(Path(checkpoint_dir).parent)
    return run.durable(f"{Path(checkpoint_dir).name}/{TRAIN_CHECKPOINTS}")


def is_finished(checkpoint_dir: Path, config: TrainSection) -> bool:
    """Whether a run folder's training is complete: its latest checkpoint is past the last
    phase and the final weights and state.json were written after it."""
    checkpoint_dir = Path(checkpoint_dir)
    if not ((checkpoint_dir / LAST).is_file() and (checkpoint_dir / STATE).is_file()):
        return False
    checkpointer = Checkpointer(
        checkpoint_dir / TRAIN_CHECKPOINTS, keep=1, remote=durable_checkpoints(checkpoint_dir)
    )
    saved = checkpointer.latest_trainer_state()
    if saved is None:
        return False
    return _saved_state(saved).position.phase >= len(config.phases)


def _saved_state(trainer_state: dict[str, Any]) -> TrainState:
    """The TrainState a checkpoint holds (under "progress" in checkpoints before the name)."""
    saved = trainer_state.get("train_state", trainer_state.get("progress"))
    return TrainState.from_json(saved)


def _old_sums(saved: dict[str, float] | list[float]) -> dict[str, float]:
    """A rank's epoch sums; checkpoints before tasks held a list: loss, correct, samples."""
    if isinstance(saved, list):
        sums = dict(zip(("objective", "accuracy", "samples"), saved, strict=True))
        sums["terms"] = sums["samples"]
        return sums
    return dict(saved)


def lr_scale(rule: str, global_batch: int, batch_size: int) -> float:
    ratio = global_batch / batch_size
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


class Trainer:
    """Runs every phase of [train] on this rank, under the strategy the topology chose."""

    def __init__(
        self,
        config: TrainSection,
        model: nn.Module,
        device: torch.device,
        *,
        seed: int = 0,
        task: Task | None = None,
        env: DistEnv | None = None,
        topology: Topology | None = None,
        log: MetricsLog | None = None,
        progress: ProgressSink | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
    ) -> None:
        self.config, self.device, self.seed = config, device, seed
        # The task owns the loss and the metrics; without one, single-label classification.
        self.task = task or ClassificationTask()
        self.monitor = config.monitor or self.task.monitor
        self.monitor_mode = config.monitor_mode or direction(self.monitor)
        self.env = env or DistEnv()
        self.tf32 = configure_tf32(config.tf32, device)
        # Built once per process (the run context's) when given; else checked here.
        self.topology = topology or build_topology(config, self.env.world_size, model, device)
        model = model.to(device)
        if config.channels_last:
            to_channels_last(model)
        self.strategy = make_strategy(config, model, self.topology, self.env.rank, device)
        # Only rank 0 reports; the others train silently.
        self.log = log if log is not None and self.env.is_main else MetricsLog(None)
        self.progress = progress if progress is not None and self.env.is_main else NullProgress()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.checkpointer = (
            Checkpointer(
                self.checkpoint_dir / TRAIN_CHECKPOINTS,
                config.checkpoint.keep,
                self.env.rank,
                self.topology.world_size > 1,
                async_save=config.checkpoint.async_save,
                remote=durable_checkpoints(self.checkpoint_dir),
            )
            if self.checkpoint_dir
            else None
        )
        # Rank 0 uploads the run folder's changed files at each checkpoint (a run at a URL).
        self._run = RunPaths(self.checkpoint_dir.parent) if self.checkpoint_dir else None
        self.resume = resume
        # The run folder holds checkpoints/ and report/: profiles go to its report/profile/.
        # Without a checkpoint folder there is no run folder, and nothing is profiled.
        self.profile_dir = (
            self.checkpoint_dir.parent / PROFILE_DIR
            if config.profile is not None and self.checkpoint_dir and self.env.is_main
            else None
        )
        self._profiler: StepProfiler | None = None
        self.system = SystemMonitor(device, energy=self.env.is_main)
        self.autocast = autocast_factory(config.precision, device)
        self.scaler = fp16_scaler(
            self.strategy, config.precision == "fp16" and device.type == "cuda"
        )
        self.state = TrainState()
        self._exact = True  # a resume continues exactly where its checkpoint stood
        # Sums of the epoch so far (kept in checkpoints, so a resumed epoch reports whole):
        # the objective, its terms, the samples, and the task's running figures.
        self._sums: dict[str, float] = {}

    @property
    def step(self) -> int:
        return self.state.position.global_step

    @property
    def model(self) -> nn.Module:
        return self.strategy.full_model

    # ---- the run -------------------------------------------------------------------------
    def fit(
        self,
        train: SplitArrays | StreamLoader,
        val: SplitArrays | StreamLoader | None = None,
    ) -> FitResult:
        """Train on an in-memory split (cut into rank shares here) or on this rank's
        StreamLoader (already cut by data-parallel rank). `val` is read in batches, each rank
        its part: in memory (cut here), or a StreamLoader cut by global rank (unshuffled,
        uneven="pad")."""
        cfg, topo = self.config, self.topology
        plan = batch_source(
            train,
            cfg.batch_size,
            topo.dp,
            topo.dp_rank(self.env.rank),
            self.seed,
            cfg.accumulation_steps,
            drop_last=topo.pp > 1,
        )
        if plan.steps_per_epoch == 0:
            raise UserError(
                f"train: the training split does not fill one batch of "
                f"{cfg.batch_size} on each of {topo.dp} rank(s)"
            )
        self.source = plan
        resume_from = self._resume_point()
        if resume_from is not None and self.state.position.phase >= len(cfg.phases):
            # Every phase was done when that checkpoint was written, but the run stopped
            # before its final weights were: restore them, never write freshly built ones.
            self._restore(resume_from, None, None)
            return self._finish(sum(p.epochs for p in cfg.phases), 0.0)
        factor = lr_scale(
            cfg.lr_scaling,
            topo.global_batch(cfg.batch_size, cfg.accumulation_steps),
            cfg.batch_size,
        )
        self._log_setup(plan, factor, resume_from)
        total_epochs = sum(p.epochs for p in cfg.phases)
        self.progress.start(total_epochs * plan.steps_per_epoch)
        started = time.perf_counter()
        try:
            self._start_profiler()
            for index, phase in enumerate(cfg.phases):
                if index < self.state.position.phase:
                    continue  # finished before the checkpoint we resumed from
                optimizer, scheduler = self._start_phase(phase, factor, plan)
                if resume_from is not None:
                    self._restore(resume_from, optimizer, scheduler)
                    resume_from = None
                while self.state.position.phase_epoch < phase.epochs and not self._stop():
                    self._run_epoch(phase, plan, val, optimizer, scheduler, total_epochs)
                if self._stop():
                    break
                pos = self.state.position
                self.state.position = Position(index + 1, 0, pos.epoch, 0, pos.global_step)
                self._checkpoint(optimizer, scheduler)
            apply_freeze(self.model, [])
        finally:
            self._stop_profiler()
            self.progress.stop()
        return self._finish(total_epochs, time.perf_counter() - started)

    def _start_profiler(self) -> None:
        if self.profile_dir is None:
            return
        run = self.checkpoint_dir.parent

        def logged(record: dict[str, Any]) -> None:
            paths = {k: str(Path(record[k]).relative_to(run)) for k in ("trace", "top_ops")}
            self.log.write({**record, **paths})

        self._profiler = StepProfiler(self.config.profile, self.device, self.profile_dir, logged)
        self._profiler.start()

    def _stop_profiler(self) -> None:
        if self._profiler is not None:
            self._profiler.stop()
            self._profiler = None

    def _stop(self) -> bool:
        """Early stopping: `patience` epochs in a row without an improvement of the monitor."""
        patience = self.config.early_stopping.patience
        return bool(patience) and self.state.stale_epochs >= patience

    def _resume_point(self) -> Path | None:
        if not (self.resume and self.checkpointer):
            return None
        path = self.checkpointer.latest()
        if path is not None:  # the counters first: they say which phase to rebuild
            saved = self.checkpointer.read_trainer_state(path)
            self.state = _saved_state(saved)
            self._exact = self._carry_position(saved, path)
        return path

    def _carry_position(self, saved: dict[str, Any], path: Path) -> bool:
        """Whether the resume continues exactly where the checkpoint stood. The data order
        is defined per optimizer step, whatever the world size, so it does while a step holds
        as many samples as before; otherwise the position moves to the step holding the
        first unread sample (re-reading the few before it in that step), said in one line."""
        cfg = self.config
        now = self.topology.global_batch(cfg.batch_size, cfg.accumulation_steps)
        was = saved.get("global_batch", now)
        pos = self.state.position
        if was == now or pos.step_in_epoch == 0:
            return was == now
        done = pos.step_in_epoch * was
        pos.step_in_epoch = done // now
        again = done - pos.step_in_epoch * now
        line = (
            f"resume from {path.name}: the global batch is {now}, it was {was}, so the resume "
            f"is not exact: epoch {pos.epoch + 1} continues at step {pos.step_in_epoch} (sample "
            f"{done - again} of its order), reading {again} sample(s) of it again"
        )
        self.log.write({"kind": "resume_inexact", "message": line})
        if self.env.is_main:
            print(line, file=sys.stderr)
        return False

    def _log_setup(
        self, plan: ArrayBatches | StreamBatches, factor: float, resume_from: Path | None
    ) -> None:
        cfg, topo = self.config, self.topology
        record = {
            "kind": "setup",
            "strategy": topo.strategy,
            "why": topo.reason,
            "world_size": topo.world_size,
            "dp": topo.dp,
            **topo.degrees,  # pp, dp_replicate, dp_shard, tp
            "batch_size": cfg.batch_size,
            "accumulation_steps": cfg.accumulation_steps,
            "global_batch": topo.global_batch(cfg.batch_size, cfg.accumulation_steps),
            "steps_per_epoch": plan.steps_per_epoch,
            "lr_scaling": cfg.lr_scaling,
            "lr_factor": factor,
            "precision": cfg.precision,
            "tf32": self.tf32,
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "resumed_from": resume_from.name if resume_from else None,
            "restart": self.env.restart_count,
        }
        self.log.write(record)
        self.progress.note(
            f"strategy {topo.describe()} ({topo.reason}); global batch {record['global_batch']}"
            f" = {cfg.batch_size} x {topo.dp} rank(s) x {cfg.accumulation_steps} accumulation;"
            f" lr scaling {cfg.lr_scaling} (x{factor:g}); {torch.get_num_threads()} CPU"
            " thread(s) per process" + (f"; resumed from {resume_from.name}" if resume_from else "")
        )

    def _start_phase(self, phase: PhaseSection, factor: float, plan: ArrayBatches | StreamBatches):
        apply_freeze(self.model, phase.freeze)
        self.strategy.setup_phase()
        scaled = phase.model_copy(update={"lr": phase.lr * factor})
        optimizer = build_optimizer(scaled, self.strategy.module)
        return optimizer, build_scheduler(scaled, optimizer, plan.steps_per_epoch)

    def _run_epoch(self, phase, plan, val, optimizer, scheduler, total_epochs) -> None:
        record = self._train_epoch(phase, plan, optimizer, scheduler)
        pos = self.state.position
        pos.epoch, pos.phase_epoch, pos.step_in_epoch = pos.epoch + 1, pos.phase_epoch + 1, 0
        record.update(phase=phase.name, epoch=pos.epoch, epochs=total_epochs)
        if val is not None and len(val):
            self._validate(val, record)
        self.log.write({"kind": "epoch", **record})
        self.progress.epoch(record)
        self.state.history.append(record)

    def _validate(self, val: SplitArrays | StreamLoader, record: dict[str, Any]) -> None:
        module = self.strategy.eval_module()
        metrics = self.task.metrics()
        batches = split_batches(
            val, self.env.rank, self.topology.world_size, self.config.eval_batch_size
        )
        run_split(module, batches, [metrics], self.device)
        # compute() reduces over every rank, so every rank takes the same branch below.
        figures = {f"val_{name}": value for name, value in metrics.compute().items()}
        record.update(figures)
        if self.monitor not in figures:
            raise UserError(
                f"train.monitor: {self.monitor!r} is not a validation metric of task "
                f"{self.task.name} (it has {', '.join(sorted(figures))})"
            )
        value, best = figures[self.monitor], self.state.best_value
        delta = self.config.early_stopping.min_delta
        better = best is None or (
            value < best - delta if self.monitor_mode == "min" else value > best + delta
        )
        if not better:
            self.state.stale_epochs += 1
            return
        self.state.best_value, self.state.stale_epochs = value, 0
        self.state.best_val_accuracy = figures.get("val_accuracy", -1.0)
        self.state.best_val_loss = figures.get("val_loss", float("inf"))
        self.state.best_epoch = self.state.position.epoch
        self._save_weights(BEST)

    # ---- one epoch -----------------------------------------------------------------------
    def _train_epoch(
        self,
        phase: PhaseSection,
        plan: ArrayBatches | StreamBatches,
        optimizer: torch.optim.Optimizer,
        scheduler,
    ) -> dict[str, Any]:
        self.model.train()
        self.strategy.train_model.train()
        pos, device, cfg = self.state.position, self.device, self.config
        task = self.task
        # Device tensors: reading them back is a CPU-GPU sync, done once per epoch.
        wide = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        sums = {k: torch.full((), v, device=device, dtype=wide) for k, v in self._sums.items()}
        for name in ("objective", "terms", "samples"):
            sums.setdefault(name, torch.zeros((), device=device, dtype=wide))
        data_s = comm_s = 0.0
        owns = self.strategy.owns_outputs
        channels_last = cfg.channels_last
        backward = self._backward
        profiler = self._profiler
        self.system.start()
        started = t0 = time.perf_counter()
        for group, global_count in plan.epoch(pos.epoch, pos.step_in_epoch):
            step_total = torch.zeros((), device=device)
            # Every sample holds the same number of terms (tokens, outputs, labels): the
            # global batch's terms follow from its samples.
            terms = task.count(group[0][1][:1])
            scale = self.topology.dp / (global_count * terms)
            for i, (x, y) in enumerate(group):
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                if channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                data_s += time.perf_counter() - t0
                with self.strategy.no_sync(i < len(group) - 1):
                    total, output = self.strategy.forward_backward(
                        x, y, task.loss, scale, self.autocast, backward
                    )
                step_total += total
                if owns and output is not None:
                    sums["terms"] += terms * len(y)
                    sums["samples"] += len(y)
                    for name, value in task.running(output, y).items():
                        if name not in sums:
                            sums[name] = torch.zeros((), device=device, dtype=wide)
                        sums[name] += value
                t0 = time.perf_counter()
            sums["objective"] += step_total
            self._optimizer_step(optimizer, scheduler)
            if profiler is not None:
                profiler.step()
            pos.step_in_epoch += 1
            self.progress.advance(f"[{phase.name}] step {pos.global_step}")
            if pos.global_step % cfg.log_every == 0:
                comm_s += self._log_step(phase, step_total, global_count * terms, scheduler)
            every = cfg.checkpoint.every_steps
            if every and pos.global_step % every == 0 and pos.step_in_epoch < plan.steps_per_epoch:
                self._sums = {k: float(v.item()) for k, v in sums.items()}
                self._checkpoint(optimizer, scheduler)
            t0 = time.perf_counter()
        t0 = time.perf_counter()
        names = self.strategy.union(list(sums))
        zero = torch.zeros((), device=device, dtype=wide)
        totals = torch.stack([sums.get(k, zero) for k in names])
        self.strategy.all_reduce_sum(totals)
        reduced = dict(zip(names, totals.tolist(), strict=True))  # one sync per epoch
        comm_s += time.perf_counter() - t0
        self._sums = {}
        seconds = time.perf_counter() - started
        system = self.system.stop()
        samples = reduced["samples"]
        running = {
            f"train_{k}": v / max(samples, 1)
            for k, v in reduced.items()
            if k not in ("objective", "terms", "samples")
        }
        return {
            "train_loss": reduced["objective"] / max(reduced["terms"], 1),
            **running,
            "lr": scheduler.get_last_lr()[0],
            "seconds": seconds,
            "samples_per_s": samples / seconds if seconds > 0 else 0.0,
            "terms_per_s": reduced["terms"] / seconds if seconds > 0 else 0.0,
            "data_s": data_s,
            # forward, backward, optimizer; under ddp/fsdp this includes the gradient
            # communication that overlaps the backward pass
            "compute_s": max(seconds - data_s - comm_s, 0.0),
            "comm_s": comm_s,  # explicit metric reductions
            "world_size": self.topology.world_size,
            **system,
        }

    def train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        scheduler,
        mark: Callable[[str], None] | None = None,
    ) -> torch.Tensor:
        """One optimizer step on one batch per rank (x, y on the device, in the model's
        layout), as fit() takes it with accumulation 1: the strategy's forward and backward
        of the task's loss, then the optimizer step. Returns the loss summed over the batch.
        `mark(name)` is called as "forward", "backward" and "optimizer" end (timing only)."""
        mark = mark or (lambda name: None)

        def backward(loss: torch.Tensor) -> None:
            mark("forward")
            self._backward(loss)

        terms = self.task.count(y[:1])
        global_count = len(y) * self.topology.dp
        scale = self.topology.dp / (global_count * terms)
        total, _ = self.strategy.forward_backward(
            x, y, self.task.loss, scale, self.autocast, backward
        )
        mark("backward")
        self._optimizer_step(optimizer, scheduler)
        mark("optimizer")
        return total

    def _backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def _log_step(
        self, phase: PhaseSection, step_total: torch.Tensor, group_terms: int, scheduler
    ) -> float:
        t0 = time.perf_counter()
        value = self.strategy.all_reduce_sum(step_total.detach().clone()).item()
        self.log.write(
            {
                "kind": "step",
                "phase": phase.name,
                "step": self.step,
                "loss": value / group_terms,
                "lr": scheduler.get_last_lr()[0],
            }
        )
        return time.perf_counter() - t0

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, scheduler) -> None:
        if self.config.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            self.strategy.clip_grad_norm(self.config.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self.state.position.global_step += 1

    # ---- checkpoints and weights ---------------------------------------------------------
    def _checkpoint(self, optimizer, scheduler) -> None:
        if self.checkpointer is None:
            return
        trainer_state = {
            "train_state": self.state.to_json(),
            "scheduler": scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "strategy": self.topology.strategy,
            "world_size": self.topology.world_size,
            "global_batch": self.topology.global_batch(
                self.config.batch_size, self.config.accumulation_steps
            ),
        }
        rank_state = {
            "rng": rng_state(self.device),
            "sums": self._sums,
            "reader": self.source.reader_state(),
        }
        path = self.checkpointer.save(
            self.step, self.strategy.module, optimizer, trainer_state, rank_state
        )
        self.log.write({"kind": "checkpoint", "step": self.step, "path": path.name})
        if self._run is not None and self.env.is_main:
            self._run.push()

    def _restore(self, path: Path, optimizer, scheduler) -> None:
        at_start = self.state.position.at_phase_start
        # At a phase start the phase builds a fresh optimizer: only the weights carry over.
        trainer_state, rank_state = self.checkpointer.load(
            path, self.strategy.module, None if at_start else optimizer
        )
        if not at_start:
            scheduler.load_state_dict(trainer_state["scheduler"])
            if trainer_state.get("scaler") and self.scaler.is_enabled():
                self.scaler.load_state_dict(trainer_state["scaler"])
        same_world = trainer_state.get("world_size", self.topology.world_size) == (
            self.topology.world_size
        )
        if rank_state is not None:
            set_rng_state(rank_state["rng"], self.device)
            self._sums = _old_sums(rank_state["sums"])
            if rank_state.get("reader") and self._exact:
                self.source.load_reader_state(rank_state["reader"])  # checks the order fits
        if not same_world:
            # The epoch's partial sums are reduced over every rank at its end: rank 0 carries
            # the sum of all the old ranks' (each counted once), the others start from zero.
            every = [_old_sums(r["sums"]) for r in self.checkpointer.read_rank_states(path)]
            names = {k for sums in every for k in sums}
            self._sums = (
                {k: sum(s.get(k, 0.0) for s in every) for k in names} if self.env.is_main else {}
            )
        self.checkpointer.release(path)

    def _save_weights(self, name: str) -> None:
        if self.checkpoint_dir is None:
            return
        tensors = self.strategy.full_state_dict()  # collective: every rank takes part
        if self.env.is_main:
            save_tensors(
                tensors, self.checkpoint_dir / name, {"epoch": str(self.state.position.epoch)}
            )

    def _finish(self, total_epochs: int, seconds: float) -> FitResult:
        if self.checkpointer is not None:
            self.checkpointer.wait()  # the last asynchronous checkpoint committed first
        state = self.state
        if state.best_epoch == 0:  # no validation split: the last weights are the best known
            state.best_epoch = state.position.epoch
            self._save_weights(BEST)
        self._save_weights(LAST)
        best = state.best_val_accuracy if state.best_val_accuracy >= 0 else None
        result = FitResult(
            epochs=state.position.epoch if self._stop() else total_epochs,
            seconds=seconds,
            best_epoch=state.best_epoch,
            best_val_accuracy=best,
            history=list(state.history),
            monitor=self.monitor,
            best_value=state.best_value,
            stopped_early=self._stop(),
        )
        if self.checkpoint_dir and self.env.is_main:
            write_json_atomic(
                self.checkpoint_dir / STATE,
                {
                    "best_epoch": result.best_epoch,
                    "best_val_accuracy": best,
                    "monitor": result.monitor,
                    "best_value": result.best_value,
                    "stopped_early": result.stopped_early,
                    "epochs": result.epochs,
                    "steps": self.step,
                    "seconds": seconds,
                    "strategy": self.topology.strategy,
                    "world_size": self.topology.world_size,
                },
            )
            if self._run is not None:
                self._run.push()  # the final weights and state.json, from the node that has them
        return result
