"""The benchmark models of the zoo: ImageNet ResNets and the GPT-style decoder."""

from __future__ import annotations

import pytest
import torch

from deepfleet.config import ModelSection
from deepfleet.models import ZOO, build_model


@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_imagenet_resnets_have_the_published_parameter_counts(name, params):
    with torch.device("meta"):
        model = build_model(ModelSection(name=name), (3, 224, 224), 1000)
        assert sum(p.numel() for p in model.parameters()) == params  # torchvision's counts
        assert model(torch.empty(2, 3, 224, 224)).shape == (2, 1000)


def test_cifar_stem_runs_on_small_images():
    model = ZOO["resnet18"]((3, 32, 32), 10, stem="cifar").eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError):
        ZOO["resnet18"]((3, 32, 32), 10, stem="tiny")


def test_decoder_is_causal_and_returns_logits_per_token():
    torch.manual_seed(0)
    model = ZOO["gpt"]((12,), 50, dim=32, layers=2, heads=4).eval()
    tokens = torch.randint(0, 50, (3, 12))
    logits = model(tokens)
    assert logits.shape == (3, 12, 50)
    changed = tokens.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 50  # change only the future of position 7
    again = model(changed)
    torch.testing.assert_close(again[:, :8], logits[:, :8])
    assert not torch.allclose(again[:, 8:], logits[:, 8:])
