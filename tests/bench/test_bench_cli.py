"""`deepfleet bench` end to end on a job file, `bench compare`, bad input, and scaling."""

from __future__ import annotations

import json
import os

import pytest
import tomli_w

from conftest import run_deepfleet, tiny_job_dict
from deepfleet.bench import TrainOptions, bench_scaling, synthetic_workload
from deepfleet.bench._peak import Peak
from deepfleet.cli import run_cli


@pytest.mark.e2e
def test_bench_a_job_then_compare(tmp_path, capsys):
    job = tmp_path / "tiny.toml"
    job.write_text(tomli_w.dumps(tiny_job_dict(tmp_path)))
    out = tmp_path / "report"
    done = run_deepfleet(
        "bench",
        "--job",
        str(job),
        "--steps",
        "2",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--no-infer",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["workload"]["name"] == "job:tiny"
    result = report["train"]["cpu"]
    assert result["batch_size"] == 64 and result["repeats"] == 2
    assert "not measured" in (out / "bench.md").read_text() or result["energy"]["measured"]
    # The run folder of the job holds the prepared data the benchmark trained on.
    assert list((tmp_path / "runs").glob("tiny-*/shards/manifest.json"))

    assert run_cli(["bench", "compare", str(out / "bench.json"), str(out / "bench.json")]) == 0
    assert "train cpu samples/s" in capsys.readouterr().out


def test_bench_bad_input_is_one_line(tmp_path, capsys):
    assert run_cli(["bench", "--workload", "nope"]) == 2
    assert run_cli(["bench", "--workload", "mlp", "--nproc", "0,2"]) == 2
    assert run_cli(["bench", "compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert err.count("error: ") == 3 and "Traceback" not in err
    assert "error: --workload: unknown workload 'nope'" in err
    assert "error: --nproc: values must be >= 1" in err
    assert "a.json: benchmark report not found" in err


@pytest.mark.distributed
@pytest.mark.slow
def test_scaling_launches_real_workers():
    opts = TrainOptions(batch_size=16, steps=2, repeats=2, warmup=1)
    scaling = bench_scaling(
        synthetic_workload("cnn"),
        "cpu",
        [2],
        opts,
        Peak(1e11, "given in the test", False),
        flops_per_step=10**9,
    )
    (row,) = scaling["rows"]
    assert row["nproc"] == 2 and row["efficiency"] == 1.0  # its own baseline
    # MFU of the whole world: 2 processes x 1e9 FLOPs per step over the step time, of 2 peaks
    assert row["mfu"] == pytest.approx(2e9 / row["step_seconds"]["median"] / 2e11)
    assert len(row["rank_samples_per_s"]) == 2
    assert "communication" in row["phases"] and row["phases"]["communication"]["median_ms"] > 0
    assert scaling["launcher"].startswith("torch.distributed.run")
    assert row["threads_per_rank"] == max(1, (os.cpu_count() or 1) // 2)  # cores split
