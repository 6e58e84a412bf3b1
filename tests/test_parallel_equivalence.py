"""Every strategy on 2 gloo ranks ends with the weights of one process on the same global
batch (the selftest's workload, launched through the elastic agent)."""

from __future__ import annotations

import pytest
import torch

from deepfleet.parallel import DistEnv, run_selftest, selftest_config, selftest_data, selftest_model
from deepfleet.train import Trainer

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def report():
    return run_selftest(2, keep_weights=True)


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    """The reference: the single-process trainer with the whole global batch."""
    trainer = Trainer(selftest_config("single", 1), selftest_model(), torch.device("cpu"),
                      seed=0, env=DistEnv())
    trainer.fit(selftest_data())
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("case", ["ddp", "ddp + accumulation", "fsdp", "pipeline 1f1b",
                                  "pipeline gpipe"])
def test_strategy_matches_one_process(report, one_process, case):
    got = report["weights"][case]
    assert set(got) == set(one_process)
    start = selftest_model()
    for key, expected in one_process.items():
        assert not torch.equal(expected, start.state_dict()[key])  # training moved it
        torch.testing.assert_close(got[key], expected, rtol=1e-5, atol=1e-6)


def test_selftest_report(report):
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    checks = [row["check"] for row in report["rows"]]
    assert checks[0] == "all-reduce 4 MiB" and len(checks) == 6
    assert all(row["ok"] for row in report["rows"]), report["rows"]
