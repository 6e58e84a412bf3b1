"""Wall time and accuracy of `deepfleet run` on the default digits job (the `make demo` run).

Target (foundation issue): test accuracy >= 0.97 and the run under 90 s on a 2-core CPU.
The baseline named here is that target; the run is repeated and the median reported. With
BASELINE_SRC=/path/to/another/checkout/src the same job also runs from that source tree,
interleaved with this one (e.g. the previous commit: `git worktree add /tmp/prev HEAD~1`),
and the ratio of the medians is reported.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deepfleet.devices import describe_machine

ROOT = Path(__file__).resolve().parents[1]
REPEATS = int(os.environ.get("REPEATS", "3"))


BASELINE_SRC = os.environ.get("BASELINE_SRC")


def one_run(src: Path = ROOT / "src") -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(src)}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "deepfleet", "run", "--set", f"run.runs_dir={tmp}"],
            check=True,
            env=env,
            capture_output=True,
        )
        seconds = time.perf_counter() - started
        (metrics,) = Path(tmp).glob("*/report/metrics.json")
        return seconds, json.loads(metrics.read_text())["accuracy"]


def main() -> None:
    runs, baseline = [], []
    for _ in range(REPEATS):  # interleaved, so a busy spell hurts both alike
        runs.append(one_run())
        if BASELINE_SRC:
            baseline.append(one_run(Path(BASELINE_SRC)))
    seconds = [s for s, _ in runs]
    result = {
        "benchmark": "demo_run",
        "what": "deepfleet run (default digits job), whole process incl. start-up",
        "repeats": REPEATS,
        "wall_seconds_median": statistics.median(seconds),
        "wall_seconds_all": seconds,
        "test_accuracy_all": [a for _, a in runs],
        "target": {"wall_seconds_max": 90, "test_accuracy_min": 0.97},
        "ratio_to_target_time": statistics.median(seconds) / 90,
        "machine": describe_machine(),
    }
    if baseline:
        before = [s for s, _ in baseline]
        result["baseline"] = {
            "src": BASELINE_SRC,
            "wall_seconds_median": statistics.median(before),
            "wall_seconds_all": before,
            "test_accuracy_all": [a for _, a in baseline],
            "ratio_this_to_baseline": statistics.median(seconds) / statistics.median(before),
        }
    out = ROOT / "benchmarks" / "results" / "demo_run.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_seconds_median", "test_accuracy_all")}))
    if baseline:
        print(json.dumps(result["baseline"]))


if __name__ == "__main__":
    main()
