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


@pytest.mark.parametrize("case", ["tp 2", "pipeline 2 x 2 stages interleaved"])
def test_gpt_layouts_on_two_ranks_match_one_process(report, case):
    """tp 2: the gpt's plan (q, k, v and MLP columns, output rows, the head's columns);
    interleaved: 4 stages of the gpt, ranks 0 and 1 running stages 0, 2 and 1, 3."""
    assert_same_weights(report["weights"][case], report["weights"]["lm one process"])


def test_selftest_report(report):
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    checks = [row["check"] for row in report["rows"]]
    assert checks[0] == "all-reduce 4 MiB" and len(checks) == 8
    assert checks[-2:] == ["gpt tp 2: 4 steps", "gpt pipeline 2 x 2 stages interleaved: 4 steps"]
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
    assert "gpt tp 2: 4 steps" in text and "interleaved" in text
    assert "FAILED" not in text and text.count(" ok ") >= 8
