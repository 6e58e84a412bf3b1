"""Where training stands: the position a checkpoint records and a resumed run continues from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Position:
    """Counters of finished work; the data reader's position is (epoch, step_in_epoch)."""

    phase: int = 0  # index of the training phase ([[train.phases]]) in progress
    phase_epoch: int = 0  # epochs finished in that phase
    epoch: int = 0  # epochs finished overall (also picks the epoch's shuffle)
    step_in_epoch: int = 0  # optimizer steps finished in the current epoch
    global_step: int = 0  # optimizer steps finished overall

    @property
    def at_phase_start(self) -> bool:
        return self.phase_epoch == 0 and self.step_in_epoch == 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Position:
        """Checkpoints written before phases had their own name say stage and stage_epoch."""
        data = dict(data)
        for old, new in (("stage", "phase"), ("stage_epoch", "phase_epoch")):
            if old in data:
                data.setdefault(new, data.pop(old))
        return cls(**data)


@dataclass
class TrainState:
    """What a resumed run must remember besides tensors: best epoch and history so far."""

    position: Position = field(default_factory=Position)
    best_val_accuracy: float = -1.0
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_value: float | None = None  # the monitored metric at the best epoch
    stale_epochs: int = 0  # validations in a row without an improvement (early stopping)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["best_val_loss"] = None if self.best_val_loss == float("inf") else self.best_val_loss
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        loss = data.get("best_val_loss")
        return cls(
            position=Position.from_json(data["position"]),
            best_val_accuracy=data["best_val_accuracy"],
            best_val_loss=float("inf") if loss is None else loss,
            best_epoch=data["best_epoch"],
            history=list(data["history"]),
            best_value=data.get("best_value"),
            stale_epochs=int(data.get("stale_epochs", 0)),
        )
