"""Checkpoints: exact resume mid-epoch and across phases, atomic commit, `latest` pointer,
pruning; a checkpoint interrupted while being written is never chosen."""

from __future__ import annotations

import json

import pytest
import torch

from deepfleet.config import TrainSection
from deepfleet.data import read_split
from deepfleet.models import mlp
from deepfleet.train import (
    TRAIN_CHECKPOINTS,
    Checkpointer,
    MetricsLog,
    NullProgress,
    Trainer,
    committed,
    find_latest,
    read_metrics,
    seed_everything,
)

CPU = torch.device("cpu")


class Crash(Exception):
    pass


class CrashAt(NullProgress):
    """Dies after optimizer step `step`, like a killed process (nothing after it runs)."""

    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def advance(self, description: str) -> None:
        self.seen += 1
        if self.seen == self.step:
            raise Crash(description)


def _config(every: int = 4) -> TrainSection:
    return TrainSection.model_validate(
        {
            "batch_size": 128,
            "log_every": 1,
            "checkpoint": {"every_steps": every, "keep": 2},
            "phases": [
                {"name": "a", "epochs": 2, "lr": 0.01, "schedule": "cosine", "warmup_steps": 3},
                {"name": "b", "epochs": 1, "lr": 0.05, "optimizer": "sgd", "freeze": ["1"]},
            ],
        }
    )


def _trainer(folder, progress=None, resume=False, every=4) -> Trainer:
    seed_everything(0)
    model = mlp((1, 8, 8), 10, hidden=[32], dropout=0.2)  # dropout: the RNG must be restored
    return Trainer(
        _config(every),
        model,
        CPU,
        seed=0,
        checkpoint_dir=folder,
        resume=resume,
        progress=progress,
        log=MetricsLog(folder / "metrics.jsonl"),
    )


@pytest.fixture(scope="module")
def splits(digits_data):
    return read_split(digits_data, "train"), read_split(digits_data, "val")


@pytest.fixture(scope="module")
def uninterrupted(splits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("whole")
    trainer = _trainer(folder)
    result = trainer.fit(*splits)
    return trainer.model.state_dict(), result


def _assert_same(model_state, expected_state):
    for key, value in expected_state.items():
        assert torch.equal(model_state[key], value), key


@pytest.mark.parametrize("crash_step", [10, 17, 21])  # epoch end, mid-epoch, in phase b
def test_resume_after_crash_equals_uninterrupted(splits, uninterrupted, tmp_path, crash_step):
    with pytest.raises(Crash):
        _trainer(tmp_path, CrashAt(crash_step)).fit(*splits)
    latest = find_latest(tmp_path / TRAIN_CHECKPOINTS)
    assert latest is not None
    resumed = _trainer(tmp_path, resume=True)
    result = resumed.fit(*splits)
    expected_state, expected = uninterrupted
    _assert_same(resumed.model.state_dict(), expected_state)
    assert [r["train_loss"] for r in result.history] == [r["train_loss"] for r in expected.history]
    assert result.best_epoch == expected.best_epoch
    setups = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "setup"]
    assert setups[-1]["resumed_from"] == latest.name


def _as_written_before_phases(root) -> None:
    """Rewrite each checkpoint's trainer.json as the trainer wrote it before phases had their
    name: the state under "progress", its position counting "stage" and "stage_epoch"."""
    for folder in committed(root):
        path = folder / "trainer.json"
        saved = json.loads(path.read_text())
        state = saved.pop("train_state")
        position = state["position"]
        position["stage"] = position.pop("phase")
        position["stage_epoch"] = position.pop("phase_epoch")
        saved["progress"] = state
        path.write_text(json.dumps(saved))


def test_a_checkpoint_from_before_phases_resumes(splits, uninterrupted, tmp_path):
    with pytest.raises(Crash):
        _trainer(tmp_path, CrashAt(21)).fit(*splits)  # the latest checkpoint: phase b's start
    _as_written_before_phases(tmp_path / TRAIN_CHECKPOINTS)
    resumed = _trainer(tmp_path, resume=True)
    result = resumed.fit(*splits)
    expected_state, expected = uninterrupted
    _assert_same(resumed.model.state_dict(), expected_state)
    assert [r["train_loss"] for r in result.history] == [r["train_loss"] for r in expected.history]
    assert [r["phase"] for r in result.history] == ["a", "a", "b"]


def test_interrupted_write_is_never_chosen(splits, uninterrupted, tmp_path, monkeypatch):
    commit = Checkpointer._commit
    calls = []

    def dying_commit(self, tmp, final):
        calls.append(final.name)
        if len(calls) == 3:  # the third checkpoint's files are written, but never committed
            raise Crash("killed while committing")
        commit(self, tmp, final)

    monkeypatch.setattr(Checkpointer, "_commit", dying_commit)
    with pytest.raises(Crash):
        _trainer(tmp_path).fit(*splits)
    root = tmp_path / TRAIN_CHECKPOINTS
    leftovers = [p.name for p in root.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [f".{calls[2]}.tmp"]
    assert (root / leftovers[0] / ".metadata").is_file()  # complete-looking, yet uncommitted
    assert find_latest(root).name == calls[1]
    monkeypatch.setattr(Checkpointer, "_commit", commit)
    resumed = _trainer(tmp_path, resume=True)
    resumed.fit(*splits)
    _assert_same(resumed.model.state_dict(), uninterrupted[0])


def test_latest_pointer_damage_falls_back_to_newest_complete(splits, tmp_path):
    _trainer(tmp_path, every=5).fit(*splits)
    root = tmp_path / TRAIN_CHECKPOINTS
    names = [p.name for p in committed(root)]
    assert len(names) == 2  # keep = 2 pruned the older ones
    (root / "latest").write_text("step-999999999\n")
    assert find_latest(root).name == names[-1]
    (root / names[-1] / "trainer.json").unlink()  # a folder missing a file is not complete
    assert find_latest(root).name == names[0]
    (root / "latest").write_text("../../etc\n")
    assert find_latest(root).name == names[0]


def test_resume_without_checkpoint_starts_fresh(splits, uninterrupted, tmp_path):
    trainer = _trainer(tmp_path, resume=True)
    trainer.fit(*splits)
    _assert_same(trainer.model.state_dict(), uninterrupted[0])


def test_only_a_checkpoint_that_does_not_fit_is_a_user_error(tmp_path):
    """A shape mismatch is the user's to fix; running out of memory while loading is not."""
    import traceback

    from torch.distributed.checkpoint import CheckpointException

    from deepfleet.errors import UserError
    from deepfleet.train._checkpoint import _load_error

    def wrapped(exc):
        return CheckpointException("load failed", {0: (exc, traceback.StackSummary())})

    mismatch = _load_error(wrapped(RuntimeError("size mismatch for 0.weight")), tmp_path)
    assert isinstance(mismatch, UserError) and "does not fit" in str(mismatch)
    oom = _load_error(wrapped(torch.OutOfMemoryError("CUDA out of memory")), tmp_path)
    assert not isinstance(oom, UserError) and "OutOfMemoryError" in str(oom)
