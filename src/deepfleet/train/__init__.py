"""Training: the loop, optimizers and schedules, checkpoints, weights on disk, and logs."""

from deepfleet.train._batches import MicroBatch, RankBatches
from deepfleet.train._checkpoint import Checkpointer, committed, find_latest
from deepfleet.train._log import (
    MetricsLog,
    NullProgress,
    PlainProgress,
    ProgressSink,
    RichProgress,
    default_progress,
    read_metrics,
)
from deepfleet.train._loop import (
    BEST,
    LAST,
    STATE,
    TRAIN_CHECKPOINTS,
    FitResult,
    Trainer,
    is_finished,
    lr_scale,
)
from deepfleet.train._optim import apply_freeze, build_optimizer, build_scheduler, lr_factor
from deepfleet.train._seed import seed_everything
from deepfleet.train._validate import run_split, split_batches
from deepfleet.weights import load_weights, save_tensors, save_weights

__all__ = [
    "BEST",
    "LAST",
    "STATE",
    "TRAIN_CHECKPOINTS",
    "Checkpointer",
    "FitResult",
    "MicroBatch",
    "MetricsLog",
    "NullProgress",
    "PlainProgress",
    "ProgressSink",
    "RankBatches",
    "RichProgress",
    "Trainer",
    "apply_freeze",
    "build_optimizer",
    "build_scheduler",
    "committed",
    "default_progress",
    "find_latest",
    "is_finished",
    "load_weights",
    "lr_factor",
    "lr_scale",
    "read_metrics",
    "run_split",
    "save_tensors",
    "save_weights",
    "seed_everything",
    "split_batches",
]
