"""Metric counting under a deterministic job: the binned mAP counts outside deterministic mode
(torchmetrics' deterministic bincount would build an N x bins matrix) and gives the same
figures; the job's setting is back afterwards."""

from __future__ import annotations

import torch

from deepfleet.tasks import Targets, build_task


def _figures() -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    task = build_task("multilabel", Targets("uint8", (8,), [str(i) for i in range(8)]))
    metrics = task.metrics()
    for _ in range(3):
        output = torch.randn(512, 8, generator=g)
        metrics.update(output, (torch.rand(512, 8, generator=g) > 0.5).to(torch.uint8))
    return metrics.compute()


def test_deterministic_mode_counts_the_same_and_is_restored():
    expected = _figures()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        got = _figures()  # 3 x 512 x 8 x 1001 bins: gigabytes under the fallback
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert got == expected
