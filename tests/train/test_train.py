"""The single-process trainer: schedules, freezing, accumulation, repeatability, best weights."""

import math

import pytest
import torch

from deepfleet.config import PhaseSection, TrainSection
from deepfleet.data import SplitArrays
from deepfleet.errors import UserError
from deepfleet.models import mlp
from deepfleet.train import (
    BEST,
    LAST,
    Trainer,
    apply_freeze,
    load_weights,
    lr_factor,
    seed_everything,
)


def toy_split(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return SplitArrays(ids=torch.arange(n), x=x, y=y)


def test_warmup_then_cosine_reaches_zero():
    phase = PhaseSection(epochs=2, lr=1.0, schedule="cosine", warmup_steps=4)
    factors = [lr_factor(phase, s, steps_per_epoch=10) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert factors[12] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert lr_factor(phase, 20, 10) == pytest.approx(0.0)


def test_step_schedule_decays_every_k_epochs():
    phase = PhaseSection(epochs=6, lr=1.0, schedule="step", step_epochs=2, gamma=0.5)
    assert [lr_factor(phase, e * 10, 10) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]


def test_freeze_by_prefix_and_unknown_prefix():
    model = mlp((1, 4, 4), 2, hidden=[8])
    assert apply_freeze(model, ["1"]) == 2
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True]
    with pytest.raises(UserError, match="no parameter named 'nope'"):
        apply_freeze(model, ["nope"])


def test_frozen_layers_do_not_change_during_their_phase():
    seed_everything(0)
    model = mlp((1, 4, 4), 2, hidden=[8], dropout=0.0)
    before = model[1].weight.detach().clone()
    config = TrainSection(batch_size=32, phases=[PhaseSection(epochs=1, lr=0.1, freeze=["1"])])
    Trainer(config, model, torch.device("cpu")).fit(toy_split())
    assert torch.equal(model[1].weight, before)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen after the phase


def _train(config, seed=0):
    seed_everything(seed)
    model = mlp((1, 4, 4), 2, hidden=[16], dropout=0.0)
    Trainer(config, model, torch.device("cpu"), seed=seed).fit(toy_split())
    return model


def test_training_is_repeatable_with_a_seed():
    config = TrainSection(batch_size=32, phases=[PhaseSection(epochs=2, lr=0.05)])
    a, b = _train(config), _train(config)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_accumulation_matches_the_large_batch():
    """2 micro-batches of 32 with accumulation give the same step as one batch of 64."""
    phase = PhaseSection(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0)
    big = _train(TrainSection(batch_size=64, phases=[phase]))
    small = _train(TrainSection(batch_size=32, accumulation_steps=2, phases=[phase]))
    for pa, pb in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_best_and_last_weights_are_written(tmp_path):
    seed_everything(0)
    model = mlp((1, 4, 4), 2, hidden=[16])
    config = TrainSection(batch_size=32, phases=[PhaseSection(epochs=3, lr=0.05)])
    result = Trainer(config, model, torch.device("cpu"), checkpoint_dir=tmp_path).fit(
        toy_split(), toy_split(64, seed=1)
    )
    assert 1 <= result.best_epoch <= 3
    assert result.best_val_accuracy == max(r["val_accuracy"] for r in result.history)
    restored = load_weights(mlp((1, 4, 4), 2, hidden=[16]), tmp_path / LAST)
    for pa, pb in zip(restored.parameters(), model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert (tmp_path / BEST).is_file()


def test_weights_of_another_model_are_refused(tmp_path):
    seed_everything(0)
    model = mlp((1, 4, 4), 2, hidden=[16])
    config = TrainSection(batch_size=32, phases=[PhaseSection(epochs=1)])
    Trainer(config, model, torch.device("cpu"), checkpoint_dir=tmp_path).fit(toy_split())
    with pytest.raises(UserError, match="do not fit the model"):
        load_weights(mlp((1, 4, 4), 2, hidden=[8]), tmp_path / LAST)
