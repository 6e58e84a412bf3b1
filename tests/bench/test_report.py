"""Training benchmark results, energy accounting, reports, charts and compare."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from deepfleet.bench import (
    BenchRequest,
    InferOptions,
    Peak,
    TrainOptions,
    bench_train,
    compare_reports,
    comparison,
    efficiencies,
    load_report,
    run_bench,
)
from deepfleet.bench._workloads import Workload
from deepfleet.config import ModelSection
from deepfleet.energy import meter_for
from deepfleet.errors import UserError

CPU = torch.device("cpu")
PNG = b"\x89PNG\r\n\x1a\n"


class FakeMeter:
    """A labelled fake meter: tests only. Every window 'uses' exactly 6 joules."""

    source = "fake: test meter"
    available = True
    fake = True
    note = "FAKE meter for tests; not a measurement"

    def __init__(self) -> None:
        self.windows = 0

    def begin(self) -> None:
        self.windows += 1

    def end(self) -> float:
        return 6.0


TINY = TrainOptions(batch_size=8, steps=3, repeats=2, warmup=1)


def small_mlp() -> Workload:
    return Workload(
        name="small",
        description="8x8 MLP",
        input_shape=(1, 8, 8),
        num_classes=10,
        model=ModelSection(name="mlp", params={"hidden": [32], "dropout": 0.0}),
        batch_size=8,
        spec={"kind": "test"},
    )


def test_training_result_is_consistent_and_energy_is_per_sample():
    meter = FakeMeter()
    result = bench_train(small_mlp(), CPU, TINY, meter=meter)
    assert result["repeats"] == 2 and result["samples_per_s"]["n"] == 2
    assert meter.windows == 2  # one energy window per timed repeat, warm-up excluded
    assert set(result["phases"]) == {"data", "forward", "backward", "optimizer"}
    assert sum(p["share"] for p in result["phases"].values()) == pytest.approx(1.0)
    step = result["step_seconds"]["median"]
    assert result["mfu"] == pytest.approx(
        result["flops_per_step"] / step / result["peak"]["flops_per_s"]
    )
    assert result["flops_per_step"] == 2 * (2 * 8 * 64 * 32) + 3 * (2 * 8 * 32 * 10)
    energy = result["energy"]
    assert energy["fake"] and energy["measured"]
    assert energy["joules_per_sample"]["median"] == pytest.approx(6.0 / (8 * 3))
    assert result["peak"]["measured"] and "2 probes" in result["peak"]["source"]  # 1 per repeat
    assert energy["watts"]["min"] == pytest.approx(6.0 / (result["step_seconds"]["max"] * 3))


def test_no_readable_meter_is_reported_plainly():
    meter = meter_for(CPU)
    if meter.available:
        pytest.skip("this machine has a readable RAPL counter")
    assert meter.note.startswith("not measured")
    result = bench_train(
        small_mlp(), CPU, TINY, meter=meter, peak=Peak(1.0, "given in the test", False)
    )
    assert result["peak"]["source"] == "given in the test"
    assert result["mfu"] > 1 and "distrust" in result["mfu_note"]  # an impossible peak
    assert result["energy"]["measured"] is False
    assert "joules_per_sample" not in result["energy"]


def test_device_comparison_and_scaling_arithmetic():
    def fake(samples_per_s, joules):
        energy = (
            {"measured": True, "joules_per_sample": {"median": joules}}
            if joules
            else {"measured": False}
        )
        return {"samples_per_s": {"median": samples_per_s}, "energy": energy}

    comp = comparison({"cpu": fake(100.0, 2.0), "cuda:0": fake(2500.0, 0.1)})
    assert comp["baseline"] == "cpu"
    assert comp["rows"][1] == {"device": "cuda:0", "speed_ratio": 25.0, "energy_ratio": 20.0}
    comp = comparison({"cpu": fake(100.0, None), "cuda:0": fake(300.0, 0.1)})
    assert comp["rows"][1]["energy_ratio"] is None
    assert efficiencies({1: 100.0, 2: 180.0, 4: 300.0}) == {1: 1.0, 2: 0.9, 4: 0.75}
    assert efficiencies({2: 100.0, 4: 150.0}) == {2: 1.0, 4: 0.75}


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report"
    request = BenchRequest(
        workload="cnn",
        devices=["cpu", "cuda"],
        train=TINY,
        infer=InferOptions(batch_sizes=[1, 4], iterations=4, warmup=1, backends=["torch"]),
        out=out,
        meters={"cpu": FakeMeter()},
    )
    report, folder = run_bench(request)
    return report, folder


def test_report_files(fake_report):
    report, folder = fake_report
    for name in ("bench.json", "bench.md", "throughput_vs_batch.png", "energy_per_sample.png"):
        assert (folder / name).is_file(), name
    assert (folder / "throughput_vs_batch.png").read_bytes().startswith(PNG)
    data = json.loads((folder / "bench.json").read_text())
    assert data["schema"] == "deepfleet.bench/1"
    assert data["settings"]["train"]["repeats"] == 2
    for key in ("torch", "git_commit", "cuda_devices", "nvidia_driver", "cpu"):
        assert key in data["environment"]
    assert [(r["backend"], r["batch_size"]) for r in data["infer"]] == [("torch", 1), ("torch", 4)]
    if not torch.cuda.is_available():
        assert any("cuda: skipped" in n for n in data["notes"])
    text = (folder / "bench.md").read_text()
    assert "FAKE meter" in text and "## Training" in text and "## Inference" in text
    assert "2 repeats of 3 steps after 1 warm-up steps" in text


def test_compare_reports_ratio_table(fake_report, tmp_path):
    report, folder = fake_report
    faster = copy.deepcopy(load_report(folder / "bench.json"))
    faster["train"]["cpu"]["samples_per_s"]["median"] *= 2
    faster["train"]["cpu"]["step_seconds"]["median"] /= 2
    rows = {r["figure"]: r for r in compare_reports(report, faster)}
    assert rows["train cpu samples/s"]["ratio"] == pytest.approx(2.0)
    assert rows["train cpu samples/s"]["better"] == "B"
    assert rows["train cpu step ms"]["ratio"] == pytest.approx(0.5)
    assert rows["train cpu step ms"]["better"] == "B"
    assert rows["infer cpu torch batch 4 samples/s"]["ratio"] == pytest.approx(1.0)
    assert "train cpu J/sample" not in rows  # fake energy is never compared
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match="not a deepfleet bench report"):
        load_report(tmp_path / "bad.json")


def test_bad_requests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown workload"):
        run_bench(BenchRequest(workload="nope", out=tmp_path / "x"))
    with pytest.raises(UserError, match="unknown device"):
        run_bench(BenchRequest(workload="mlp", devices=["tpu"], out=tmp_path / "x"))
    with pytest.raises(UserError, match="exactly one"):
        run_bench(BenchRequest(out=tmp_path / "x"))
