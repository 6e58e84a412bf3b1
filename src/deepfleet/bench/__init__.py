"""Benchmarks: training throughput, step split, MFU, memory and energy; inference latency;
device comparison and multi-process scaling; JSON, Markdown and PNG reports."""

from __future__ import annotations

from deepfleet._lazy import lazy_exports

# Names are imported on first use, so that the worker processes of a scaling run start without
# the reporting stack (matplotlib, onnx, scikit-learn): on a busy machine that is seconds each.
_EXPORTS = {
    "compare_reports": "_compare",
    "figures": "_compare",
    "load_report": "_compare",
    "count_flops": "_flops",
    "forward_flops": "_flops",
    "train_step_flops": "_flops",
    "BACKENDS": "_infer",
    "InferOptions": "_infer",
    "bench_infer": "_infer",
    "PEAK_TABLE": "_peak",
    "Peak": "_peak",
    "device_peak": "_peak",
    "measure_matmul_peak": "_peak",
    "mfu": "_peak",
    "table_peak": "_peak",
    "BenchProgress": "_progress",
    "silent_progress": "_progress",
    "markdown": "_report",
    "write_report": "_report",
    "BenchRequest": "_run",
    "comparison": "_run",
    "parse_devices": "_run",
    "run_bench": "_run",
    "bench_scaling": "_scaling",
    "efficiencies": "_scaling",
    "latency_summary": "_stats",
    "percentile": "_stats",
    "summarize": "_stats",
    "PhaseTimer": "_timer",
    "synchronize": "_timer",
    "wall_timer": "_timer",
    "TrainOptions": "_train",
    "bench_train": "_train",
    "SYNTHETIC": "_workloads",
    "Workload": "_workloads",
    "job_workload": "_workloads",
    "synthetic_workload": "_workloads",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(
    __name__, {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()}, __all__
)
