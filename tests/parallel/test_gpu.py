"""CUDA paths: NCCL, bf16 autocast, fp16 with a gradient scaler, TF32 (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

from deepfleet.config import TrainSection
from deepfleet.parallel import DistEnv
from deepfleet.selftest import run_selftest, selftest_data, selftest_model
from deepfleet.train import Trainer

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_single_gpu_mixed_precision_learns(precision):
    config = TrainSection.model_validate(
        {
            "batch_size": 32,
            "precision": precision,
            "tf32": True,
            "grad_clip": 1.0,
            "phases": [{"epochs": 5, "lr": 0.01}],
        }
    )
    trainer = Trainer(config, selftest_model(), torch.device("cuda", 0), env=DistEnv())
    result = trainer.fit(selftest_data(rows=512))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert trainer.scaler.is_enabled() == (precision == "fp16")


@pytest.mark.distributed
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_selftest_on_nccl():
    report = run_selftest(2)
    assert report["backend"] == "nccl"
    assert all(row["ok"] for row in report["rows"]), report["rows"]
