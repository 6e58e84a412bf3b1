"""Benchmarks: training throughput, step split, MFU, memory and energy; inference latency;
device comparison and multi-process scaling; JSON, Markdown and PNG reports."""

from deepfleet.bench._compare import compare_reports, figures, load_report
from deepfleet.bench._energy import EnergyMeter, NoMeter, ZeusMeter, meter_for
from deepfleet.bench._flops import count_flops, forward_flops, train_step_flops
from deepfleet.bench._infer import BACKENDS, InferOptions, bench_infer
from deepfleet.bench._onnx import export_onnx
from deepfleet.bench._peak import (
    PEAK_TABLE,
    Peak,
    device_peak,
    measure_matmul_peak,
    mfu,
    table_peak,
)
from deepfleet.bench._progress import BenchProgress, silent_progress
from deepfleet.bench._report import markdown, write_report
from deepfleet.bench._run import BenchRequest, comparison, parse_devices, run_bench
from deepfleet.bench._scaling import bench_scaling, efficiencies
from deepfleet.bench._stats import latency_summary, percentile, summarize
from deepfleet.bench._timer import PhaseTimer, synchronize, wall_timer
from deepfleet.bench._train import TrainOptions, bench_train
from deepfleet.bench._workloads import SYNTHETIC, Workload, job_workload, synthetic_workload

__all__ = [
    "BACKENDS",
    "PEAK_TABLE",
    "SYNTHETIC",
    "BenchProgress",
    "BenchRequest",
    "EnergyMeter",
    "InferOptions",
    "NoMeter",
    "Peak",
    "PhaseTimer",
    "TrainOptions",
    "Workload",
    "ZeusMeter",
    "bench_infer",
    "bench_scaling",
    "bench_train",
    "compare_reports",
    "comparison",
    "count_flops",
    "device_peak",
    "efficiencies",
    "export_onnx",
    "figures",
    "forward_flops",
    "job_workload",
    "latency_summary",
    "load_report",
    "markdown",
    "measure_matmul_peak",
    "meter_for",
    "mfu",
    "parse_devices",
    "percentile",
    "run_bench",
    "silent_progress",
    "summarize",
    "synchronize",
    "synthetic_workload",
    "table_peak",
    "train_step_flops",
    "wall_timer",
    "write_report",
]
