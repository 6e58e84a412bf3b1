"""Every task trains under ddp, fsdp and pipeline on 2 gloo ranks with the weights of one
process on the same global batches, and its validation figures agree."""

from __future__ import annotations

import pytest
import torch
from task_cases import STRATEGIES, launch, task_data, task_model, train_task

from deepfleet.parallel import DistEnv

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("name", ["classification", "multilabel", "regression", "causal_lm"])
def test_every_strategy_matches_one_process(name):
    single = train_task(name, "single", 1, DistEnv(), torch.device("cpu"))
    start = task_model(task_data(name)[0]).state_dict()
    got = launch(name)
    assert set(got) == {case for case, *_ in STRATEGIES}
    for case, run in got.items():
        assert set(run["weights"]) == set(single["weights"]), case
        for key, expected in single["weights"].items():
            assert not torch.equal(expected, start[key])  # training moved it
            torch.testing.assert_close(
                run["weights"][key], expected, rtol=1e-5, atol=1e-6, msg=f"{case}: {key}"
            )
        # Validation over 2 ranks (each its half, metrics reduced) equals one process's.
        for mine, ref in zip(run["history"], single["history"], strict=True):
            for key in ref:
                if key.startswith("val_"):
                    assert mine[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-6), (case, key)
