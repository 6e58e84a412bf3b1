"""The single-process training loop: stages, precision, accumulation, validation, best weights."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from deepfleet._atomic import write_json_atomic
from deepfleet.config import StageSection, TrainSection
from deepfleet.data import SplitArrays, StreamLoader
from deepfleet.train._log import MetricsLog, NullProgress, ProgressSink
from deepfleet.train._optim import apply_freeze, build_optimizer, build_scheduler
from deepfleet.train._weights import save_weights

BEST = "best.safetensors"
LAST = "last.safetensors"
STATE = "state.json"

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FitResult:
    epochs: int
    seconds: float
    best_epoch: int
    best_val_accuracy: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


@torch.no_grad()
def evaluate_loss_accuracy(model: nn.Module, data: SplitArrays, device: torch.device,
                           batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` over a split (eval mode)."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(data), batch_size):
        x = data.x[start:start + batch_size].to(device)
        y = data.y[start:start + batch_size].to(device)
        logits = model(x).float()
        total_loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / max(len(data), 1), correct / max(len(data), 1)


class Trainer:
    """Runs every stage of [train] on one process."""

    def __init__(self, config: TrainSection, model: nn.Module, device: torch.device, *,
                 generator: torch.Generator | None = None, log: MetricsLog | None = None,
                 progress: ProgressSink | None = None,
                 checkpoint_dir: Path | None = None) -> None:
        self.config = config
        self.model = model.to(device)
        self.device = device
        self.generator = generator
        self.log = log or MetricsLog(None)
        self.progress = progress or NullProgress()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.loss_fn = nn.CrossEntropyLoss()
        self.step = 0
        dtype = _AUTOCAST.get(config.precision)
        self._autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else (
            contextlib.nullcontext)
        use_scaler = config.precision == "fp16" and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def _loader(self, data: SplitArrays) -> DataLoader:
        return DataLoader(TensorDataset(data.x, data.y), batch_size=self.config.batch_size,
                          shuffle=True, generator=self.generator,
                          num_workers=self.config.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _steps_per_epoch(self, loader: DataLoader) -> int:
        return math.ceil(len(loader) / self.config.accumulation_steps)

    def fit(self, train: SplitArrays | StreamLoader,
            val: SplitArrays | None = None) -> FitResult:
        loader = train if isinstance(train, StreamLoader) else self._loader(train)
        total_epochs = sum(s.epochs for s in self.config.stages)
        self.progress.start(total_epochs * self._steps_per_epoch(loader))
        started = time.perf_counter()
        best = (-1.0, math.inf)
        result = FitResult(epochs=total_epochs, seconds=0.0, best_epoch=0, best_val_accuracy=None)
        epoch = 0
        try:
            for stage in self.config.stages:
                apply_freeze(self.model, stage.freeze)
                optimizer = build_optimizer(stage, self.model)
                scheduler = build_scheduler(stage, optimizer, self._steps_per_epoch(loader))
                for _ in range(stage.epochs):
                    epoch += 1
                    if isinstance(loader, StreamLoader):  # a new seeded order every epoch
                        loader.set_epoch(epoch)
                    record = self._train_epoch(stage, loader, optimizer, scheduler)
                    record.update(stage=stage.name, epoch=epoch, epochs=total_epochs)
                    if val is not None and len(val):
                        val_loss, val_acc = evaluate_loss_accuracy(self.model, val, self.device)
                        record.update(val_loss=val_loss, val_accuracy=val_acc)
                        if (val_acc, -val_loss) > (best[0], -best[1]):
                            best = (val_acc, val_loss)
                            result.best_epoch, result.best_val_accuracy = epoch, val_acc
                            self._save(BEST, epoch)
                    self.log.write({"kind": "epoch", **record})
                    self.progress.epoch(record)
                    result.history.append(record)
            apply_freeze(self.model, [])
        finally:
            self.progress.stop()
        if result.best_epoch == 0:  # no validation split: the last weights are the best known
            result.best_epoch = epoch
            self._save(BEST, epoch)
        self._save(LAST, epoch)
        result.seconds = time.perf_counter() - started
        if self.checkpoint_dir:
            write_json_atomic(self.checkpoint_dir / STATE, {
                "best_epoch": result.best_epoch, "best_val_accuracy": result.best_val_accuracy,
                "epochs": total_epochs, "steps": self.step, "seconds": result.seconds})
        return result

    def _save(self, name: str, epoch: int) -> None:
        if self.checkpoint_dir:
            save_weights(self.model, self.checkpoint_dir / name, {"epoch": str(epoch)})

    def _train_epoch(self, stage: StageSection, loader: DataLoader,
                     optimizer: torch.optim.Optimizer, scheduler) -> dict[str, Any]:
        self.model.train()
        accumulation = self.config.accumulation_steps
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        started = time.perf_counter()
        batches = len(loader)
        for index, (x, y) in enumerate(loader):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            with self._autocast():
                logits = self.model(x)
                loss = self.loss_fn(logits.float(), y)
            # A short final group divides by its own size so every sample weighs the same.
            group = min(accumulation, batches - (index // accumulation) * accumulation)
            self.scaler.scale(loss / group).backward()
            total_loss += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (index + 1) % accumulation == 0 or index + 1 == batches:
                self._optimizer_step(optimizer, scheduler)
                self.progress.advance(f"[{stage.name}] step {self.step}")
                if self.step % self.config.log_every == 0:
                    self.log.write({"kind": "step", "stage": stage.name, "step": self.step,
                                    "loss": loss.item(), "lr": scheduler.get_last_lr()[0]})
        seconds = time.perf_counter() - started
        return {
            "train_loss": total_loss.item() / max(seen, 1),  # one sync per epoch, not per step
            "train_accuracy": correct.item() / max(seen, 1),
            "lr": scheduler.get_last_lr()[0],
            "seconds": seconds,
            "samples_per_s": seen / seconds if seconds > 0 else 0.0,
        }

    def _optimizer_step(self, optimizer: torch.optim.Optimizer, scheduler) -> None:
        if self.config.grad_clip is not None:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], self.config.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self.step += 1
