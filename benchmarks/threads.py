"""Training time of the digits job by CPU thread count (`run.threads`), in one run.

Baseline: torch's own default thread count (the machine's cores), which is what a single
process used before `run.threads` existed; deepfleet now defaults to 1 thread per process, as
torchrun gives its workers. The runs are interleaved (1, default, 1, default, ...) and each
is a fresh process, so start-up and the machine's load fall on both alike.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from deepfleet.devices import describe_machine

ROOT = Path(__file__).resolve().parents[1]
REPEATS = int(os.environ.get("REPEATS", "3"))
EPOCHS = 4


def one_run(threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        env.pop("OMP_NUM_THREADS", None)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "deepfleet",
                "train",
                "digits",
                "--set",
                f"run.runs_dir={tmp}",
                "--set",
                f"run.threads={threads}",
                "--set",
                "train.phases.0.epochs=1",
                "--set",
                f"train.phases.1.epochs={EPOCHS - 1}",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        (state,) = Path(tmp).glob("*/checkpoints/state.json")
        (metrics,) = Path(tmp).glob("*/metrics.jsonl")
        epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
        epochs = [r for r in epochs if r.get("kind") == "epoch"]
        return {
            "threads": threads,
            "train_seconds": json.loads(state.read_text())["seconds"],
            "best_epoch": json.loads(state.read_text())["best_epoch"],
            "val_loss": [r["val_loss"] for r in epochs],
        }


def main() -> None:
    default = os.cpu_count() or 1
    runs: dict[int, list[dict]] = {1: [], default: []}
    for _ in range(REPEATS):
        for threads in runs:
            runs[threads].append(one_run(threads))
    medians = {t: statistics.median(r["train_seconds"] for r in rs) for t, rs in runs.items()}
    result = {
        "benchmark": "threads",
        "what": f"deepfleet train digits, {EPOCHS} epochs, training seconds (state.json)",
        "repeats": REPEATS,
        "baseline": f"torch's default thread count ({default}, the machine's cores)",
        "train_seconds_median": {str(t): m for t, m in medians.items()},
        "speedup_one_thread_vs_default": medians[default] / medians[1],
        "same_result_every_repeat": {
            str(t): all(r["val_loss"] == rs[0]["val_loss"] for r in rs) for t, rs in runs.items()
        },
        "best_epoch": {str(t): [r["best_epoch"] for r in rs] for t, rs in runs.items()},
        "runs": runs,
        "machine": describe_machine(),
    }
    out = ROOT / "benchmarks" / "results" / "threads.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "train_seconds_median",
                    "speedup_one_thread_vs_default",
                    "same_result_every_repeat",
                    "best_epoch",
                )
            }
        )
    )


if __name__ == "__main__":
    main()
