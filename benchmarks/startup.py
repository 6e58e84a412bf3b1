"""Start-up time of the command line against `python -c "import torch"`, in one run.

Measured, wall seconds of whole processes, interleaved, median of --repeats:
  baseline  python -c "import torch"
  help      python -m deepfleet --help
  train     python -m deepfleet train --help
Target (the run-context issue): each within 1.3x the baseline. Writes
benchmarks/results/startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from deepfleet.devices import describe_machine

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import_torch": [sys.executable, "-c", "import torch"],
    "deepfleet_help": [sys.executable, "-m", "deepfleet", "--help"],
    "train_help": [sys.executable, "-m", "deepfleet", "train", "--help"],
}


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the file cache once
        timed(command)
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            seconds[name].append(timed(command))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "benchmark": "startup",
        "what": "wall seconds of whole processes, interleaved, medians",
        "repeats": args.repeats,
        "baseline": "python -c 'import torch'",
        "seconds_median": medians,
        "seconds_all": seconds,
        "ratio_to_import_torch": {
            name: medians[name] / medians["import_torch"]
            for name in COMMANDS
            if name != "import_torch"
        },
        "target_ratio_max": 1.3,
        "machine": describe_machine(),
    }
    out = ROOT / "benchmarks" / "results" / "startup.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds_median", "ratio_to_import_torch")}, indent=1))


if __name__ == "__main__":
    main()
