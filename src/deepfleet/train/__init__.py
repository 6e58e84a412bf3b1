"""Training: the loop, optimizers and schedules, weights on disk, and training logs."""

from deepfleet.train._log import (
    MetricsLog,
    NullProgress,
    PlainProgress,
    ProgressSink,
    RichProgress,
    default_progress,
    read_metrics,
)
from deepfleet.train._loop import BEST, LAST, FitResult, Trainer, evaluate_loss_accuracy
from deepfleet.train._optim import apply_freeze, build_optimizer, build_scheduler, lr_factor
from deepfleet.train._seed import seed_everything
from deepfleet.train._weights import load_weights, save_weights, state_tensors

__all__ = [
    "BEST",
    "LAST",
    "FitResult",
    "MetricsLog",
    "NullProgress",
    "PlainProgress",
    "ProgressSink",
    "RichProgress",
    "Trainer",
    "apply_freeze",
    "build_optimizer",
    "build_scheduler",
    "default_progress",
    "evaluate_loss_accuracy",
    "load_weights",
    "lr_factor",
    "read_metrics",
    "save_weights",
    "seed_everything",
    "state_tensors",
]
