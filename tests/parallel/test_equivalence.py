"""Every strategy on 2 gloo ranks ends with the weights of one process on the same global
batch (the selftest's workload, launched through the elastic agent)."""

from __future__ import annotations

import pytest
import torch
from layout_checks import assert_same_weights

from conftest import run_deepfleet
from deepfleet.parallel import DistEnv
from deepfleet.selftest import run_selftest, selftest_config, selftest_data, selftest_model
from deepfleet.train import Trainer

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def report():
    return run_selftest(2, keep_weights=True)


@pytest.fixture(scope="module")
def one_process() -> dict[str, torch.Tensor]:
    """The reference: the single-process trainer with the whole global batch."""
    trainer = Trainer(
        selftest_config("single", 1), selftest_model(), torch.device("cpu"), seed=0, env=DistEnv()
    )
    trainer.fit(selftest_data())
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    "case", ["ddp", "ddp + accumulation", "fsdp", "pipeline 1f1b", "pipeline gpipe"]
)
def test_strategy_matches_one_process(report, one_process, case):
    got = report["weights"][case]
    assert set(got) == set(one_process)
    start = selftest_model()
    for key, expected in one_process.items():
        assert not torch.equal(expected, start.state_dict()[key])  # training moved it
        torch.testing.assert_close(got[key], expected, rtol=1e-5, atol=1e-6)


def test_gpt_tensor_parallel_matches_one_process(report):
    """The gpt's plan on 2 ranks: q, k, v and MLP columns, output rows, the head's columns."""
    assert_same_weights(report["weights"]["tp 2"], report["weights"]["lm one process"])


def test_selftest_report(report):
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    checks = [row["check"] for row in report["rows"]]
    assert checks[0] == "all-reduce 4 MiB" and checks[-1] == "gpt tp 2: 4 steps"
    assert len(checks) == 7
    assert all(row["ok"] for row in report["rows"]), report["rows"]


def test_selftest_command_prints_the_table():
    done = run_deepfleet("selftest", "--nproc", "2", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    text = " ".join(done.stdout.split())
    assert "selftest: 2 processes, gloo on cpu" in text
    for check in (
        "all-reduce 4 MiB",
        "ddp: 4 steps",
        "fsdp: 4 steps",
        "pipeline 1f1b: 4 steps",
        "pipeline gpipe: 4 steps",
    ):
        assert check in text
    assert "gpt tp 2: 4 steps" in text
    assert "FAILED" not in text and text.count(" ok ") >= 7
