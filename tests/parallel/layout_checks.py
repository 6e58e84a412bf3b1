"""Shared by the layout tests: weights trained under a layout against one process's."""

from __future__ import annotations

import torch

from deepfleet.selftest import lm_model


def assert_same_weights(got: dict, expected: dict, start: dict | None = None) -> None:
    """`start`: the weights before training (the selftest's gpt unless given)."""
    start = start if start is not None else lm_model().state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert not torch.equal(value, start[key]) or key.endswith("k.bias")
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
