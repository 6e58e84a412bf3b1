"""`deepfleet bench --profile`: a Chrome trace and top operators in the report folder."""

from __future__ import annotations

import json

from deepfleet.cli import run_cli


def test_bench_profile_writes_trace_and_top_ops(tmp_path):
    out = tmp_path / "report"
    args = ["bench", "--workload", "mlp", "--steps", "2", "--repeats", "1", "--warmup", "1"]
    assert run_cli([*args, "--batch-size", "8", "--no-infer", "--profile", "--out", str(out)]) == 0
    report = json.loads((out / "bench.json").read_text())
    profiled = report["train"]["cpu"]["profile"]
    assert profiled["folder"] == "profile/cpu" and profiled["steps"] == 2
    (trace,) = profiled["traces"]
    events = json.loads((out / "profile" / "cpu" / trace).read_text())["traceEvents"]
    assert any(str(e.get("name", "")).startswith("aten::") for e in events)
    assert "aten::" in (out / "profile" / "cpu" / profiled["top_ops"]).read_text()
    assert report["settings"]["train"]["profile"] is True


def test_bench_without_profile_writes_no_trace(tmp_path):
    out = tmp_path / "report"
    args = ["bench", "--workload", "mlp", "--steps", "1", "--repeats", "1", "--warmup", "0"]
    assert run_cli([*args, "--batch-size", "8", "--no-infer", "--out", str(out)]) == 0
    assert not (out / "profile").exists()
    assert "profile" not in json.loads((out / "bench.json").read_text())["train"]["cpu"]
