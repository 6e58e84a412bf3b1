"""`deepfleet bench` on this machine's CPU: the digits job and a small synthetic workload.

Writes benchmarks/results/bench_cpu.json (both reports, the machine, and the ratios against the
named baselines, all measured in this one run) and the two Markdown reports beside it.

Baselines, all measured in this run: inference is onnxruntime over torch (eager) at each batch
size; scaling is 2 processes over 1 process; threads is torch training with 2 intra-op threads
over 1 thread. The main runs use one thread per process: on a 2-core machine shared with other
work, OpenMP's second thread mostly waits for a core (the threads ratio shows how much).
Energy: measured only where Zeus can read a meter.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from deepfleet._atomic import write_json_atomic, write_text_atomic
from deepfleet.bench import BenchRequest, InferOptions, TrainOptions, run_bench
from deepfleet.devices import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench_cpu"


def _inference_ratios(report: dict) -> list[dict]:
    rows = {(r["backend"], r["batch_size"]): r for r in report["infer"]}
    out = []
    for (backend, batch), row in sorted(rows.items()):
        base = rows.get(("torch", batch))
        if backend != "torch" and base:
            out.append(
                {
                    "batch_size": batch,
                    "baseline": "torch",
                    "onnxruntime_over_torch_samples_per_s": row["samples_per_s"]
                    / base["samples_per_s"],
                    "p50_ms": {"torch": base["p50_ms"], backend: row["p50_ms"]},
                }
            )
    return out


def _scaling_ratio(report: dict) -> dict | None:
    rows = (report.get("scaling") or {}).get("rows", [])
    return (
        {
            "baseline": "1 process",
            "rows": [
                {
                    "nproc": r["nproc"],
                    "efficiency": r["efficiency"],
                    "samples_per_s_ratio": r["samples_per_s"]["median"]
                    / rows[0]["samples_per_s"]["median"],
                }
                for r in rows
            ],
        }
        if rows
        else None
    )


def main() -> int:
    train = TrainOptions(steps=20, repeats=5, warmup=5)
    one = {"threads": 1}
    infer = InferOptions(batch_sizes=[1, 8, 64], iterations=50, warmup=5)
    results: dict = {"machine": describe_machine(), "runs": {}}
    markdown: dict[str, str] = {}  # written last: the results are tracked files, and writing
    # them mid-run would mark the later runs' git commit as dirty
    with tempfile.TemporaryDirectory(prefix="deepfleet-bench-") as tmp:
        requests = {
            "digits_job": BenchRequest(
                job="digits",
                overrides=[f"run.runs_dir={tmp}/runs"],
                devices=["cpu", "cuda"],
                nproc=[1, 2],
                train=train,
                infer=infer,
                out=Path(tmp) / "digits",
                **one,
            ),
            "digits_job_2_threads": BenchRequest(
                job="digits",
                overrides=[f"run.runs_dir={tmp}/runs"],
                train=train,
                run_infer=False,
                out=Path(tmp) / "digits2",
                threads=2,
            ),
            "cnn_synthetic": BenchRequest(
                workload="cnn",
                devices=["cpu"],
                train=train,
                infer=infer,
                out=Path(tmp) / "cnn",
                **one,
            ),
        }
        for name, request in requests.items():
            report, folder = run_bench(request)
            results["runs"][name] = {
                "report": report,
                "ratios": {
                    "inference": _inference_ratios(report),
                    "scaling": _scaling_ratio(report),
                    "devices": report["comparison"],
                },
            }
            markdown[name] = (folder / "bench.md").read_text()
    one_thread = results["runs"]["digits_job"]["report"]["train"]["cpu"]
    two_threads = results["runs"]["digits_job_2_threads"]["report"]["train"]["cpu"]
    results["threads_ratio"] = {
        "baseline": "digits job training, 1 torch thread",
        "two_over_one_samples_per_s": two_threads["samples_per_s"]["median"]
        / one_thread["samples_per_s"]["median"],
    }
    write_json_atomic(RESULTS / f"{NAME}.json", results)
    for name, text in markdown.items():
        write_text_atomic(RESULTS / f"{NAME}_{name}.md", text)
    print(f"wrote {RESULTS / f'{NAME}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
