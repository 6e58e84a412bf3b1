"""The causal-LM task against a hand-written PyTorch next-token loop, and perplexity."""

from __future__ import annotations

import math

import torch
from task_cases import CONTEXT, VOCAB, task_data, task_model
from torch.nn import functional as F

from deepfleet.config import TrainSection
from deepfleet.train import Trainer


def _config(epochs: int) -> TrainSection:
    phase = {"name": "s", "epochs": epochs, "lr": 0.5, "optimizer": "sgd", "momentum": 0.0}
    return TrainSection.model_validate(
        {"strategy": "single", "batch_size": 128, "log_every": 1000, "phases": [phase]}
    )


def test_losses_and_weights_equal_a_hand_written_next_token_loop():
    task, data = task_data("causal_lm")
    assert len(data) == 128  # one full batch per step: the row order cannot matter
    trainer = Trainer(_config(3), task_model(task), torch.device("cpu"), task=task)
    result = trainer.fit(data)

    model = task_model(task)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.0)
    losses = []
    for _ in range(3):
        logits = model(data.x)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), data.y.long().reshape(-1))
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    got = [r["train_loss"] for r in result.history]
    assert all(abs(a - b) < 1e-6 for a, b in zip(got, losses, strict=True)), (got, losses)
    assert losses[-1] < losses[0]  # it learned
    for key, value in model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[key], value, rtol=0, atol=1e-6)
    assert data.y.shape[1] == CONTEXT  # every target token is one term of the loss


def test_perplexity_is_exp_of_the_mean_token_loss():
    task, data = task_data("causal_lm")
    trainer = Trainer(_config(1), task_model(task), torch.device("cpu"), task=task)
    record = trainer.fit(data, data).history[0]
    with torch.no_grad():  # the mean over every target token, computed here independently
        logits = trainer.model.eval()(data.x)
        mean = F.cross_entropy(logits.reshape(-1, VOCAB), data.y.long().reshape(-1)).item()
    assert abs(record["val_loss"] - mean) < 1e-6
    assert record["val_perplexity"] == math.exp(record["val_loss"])
