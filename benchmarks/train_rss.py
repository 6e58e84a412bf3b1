"""Peak memory of `deepfleet train` on the digits job against a hand-written PyTorch loop.

Each side runs in a fresh process, one CPU thread, interleaved, --repeats times:
  deepfleet  python -m deepfleet train src/deepfleet/examples/digits.toml (prepares the
             data set, then trains: 12 epochs, batch 64, AdamW, a validation pass an epoch,
             checkpoints)
  hand       this file with --hand: scikit-learn digits split the same way (70/10/20),
             the same CNN written out in torch.nn, 12 epochs of batch 64 with AdamW, a
             validation pass an epoch, the best weights saved with torch.save
Peak RSS is the child's own ru_maxrss from os.wait4 (so one run cannot hide another's).
A last, unmeasured run of each lists the packages it had imported when it finished.
Target: deepfleet within 1.15x the hand loop. Writes benchmarks/results/train_rss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "src" / "deepfleet" / "examples" / "digits.toml"
RESULTS = ROOT / "benchmarks" / "results" / "train_rss.json"
TARGET = 1.15
# The digits job's [train] section, repeated for the hand loop (checked against the job file
# in main(), so the two cannot drift apart unnoticed).
EPOCHS, BATCH, CHANNELS, HIDDEN, DROPOUT = 12, 64, (32, 64), 128, 0.2
# Written at exit when set: the top-level packages the process had imported.
MODULES_ENV = "TRAIN_RSS_MODULES_TO"


def hand_model():
    """The job's CNN (deepfleet.models.cnn with channels 32, 64, hidden 128), by hand."""
    from torch import nn

    blocks, in_channels = [], 1
    for out in CHANNELS:
        blocks += [
            nn.Conv2d(in_channels, out, 3, padding=1),
            nn.BatchNorm2d(out),
            nn.ReLU(),
            nn.Conv2d(out, out, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        in_channels = out
    return nn.Sequential(
        nn.Sequential(*blocks),
        nn.Sequential(
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(in_channels * 4, HIDDEN),
            nn.ReLU(),
            nn.Dropout(DROPOUT),
            nn.Linear(HIDDEN, 10),
        ),
    )


def hand_loop(out: Path) -> None:
    """The baseline process: what one writes without a framework."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(0)
    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16).unsqueeze(1)  # [N, 1, 8, 8] in 0..1
    y = torch.from_numpy(digits.target).long()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    n_test, n_val = int(0.2 * len(x)), int(0.1 * len(x))
    val, train = order[n_test : n_test + n_val], order[n_test + n_val :]
    model = hand_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.002, weight_decay=0.01)
    best = -1.0
    for epoch in range(EPOCHS):
        model.train()
        shuffled = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))]
        for start in range(0, len(shuffled), BATCH):
            rows = shuffled[start : start + BATCH]
            loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            accuracy = (model(x[val]).argmax(1) == y[val]).float().mean().item()
        if accuracy > best:
            best = accuracy
            torch.save(model.state_dict(), out / "best.pt")
    print(f"hand loop: best val accuracy {best:.3f}")


def _record_modules() -> None:
    target = os.environ.get(MODULES_ENV)
    if target:
        import atexit

        def write() -> None:
            tops = sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")})
            Path(target).write_text(json.dumps(tops))

        atexit.register(write)


# Runs `python -m deepfleet ...` with the module recorder in front (only for the listing run).
DEEPFLEET_WITH_RECORDER = (
    "import runpy, sys; sys.path.insert(0, {bench!r}); import train_rss; "
    "train_rss._record_modules(); sys.argv = ['deepfleet'] + sys.argv[1:]; "
    "runpy.run_module('deepfleet', run_name='__main__', alter_sys=True)"
)


def command(side: str, work: Path, record: bool = False) -> list[str]:
    if side == "hand":
        return [sys.executable, __file__, "--hand", str(work)]
    args = ["train", str(JOB), "--set", f"run.runs_dir={work / 'runs'}"]
    if record:
        code = DEEPFLEET_WITH_RECORDER.format(bench=str(Path(__file__).parent))
        return [sys.executable, "-c", code, *args]
    return [sys.executable, "-m", "deepfleet", *args]


def measured(side: str, record_to: Path | None = None) -> dict[str, float]:
    """One fresh process: its own peak RSS (MiB) and wall seconds."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if record_to is not None:
        env[MODULES_ENV] = str(record_to)
    with tempfile.TemporaryDirectory() as tmp:
        # stderr to a file, not a pipe: nobody reads a pipe while the child runs.
        log = Path(tmp) / "stderr.txt"
        with log.open("wb") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(
                command(side, Path(tmp), record_to is not None),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            # wait4, not getrusage(RUSAGE_CHILDREN): the latter is the largest of all children
            # so far, so a smaller process measured after a larger one would read the larger.
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if proc.returncode != 0:
            raise SystemExit(f"{side} run failed:\n{log.read_text(errors='replace')}")
    return {"peak_rss_mib": usage.ru_maxrss / 1024, "seconds": seconds}  # Linux: KiB


def check_same_job() -> None:
    """The hand loop repeats the job file's settings and model; fail if they differ."""
    import torch

    from deepfleet.config import load_job
    from deepfleet.models import build_model

    job = load_job(JOB, [])
    assert job.train.batch_size == BATCH, job.train.batch_size
    assert sum(p.epochs for p in job.train.phases) == EPOCHS
    ours = build_model(job.model, (1, 8, 8), 10).state_dict()
    theirs = hand_model().state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in theirs.items()]
    assert all(torch.is_tensor(v) for v in theirs.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hand", type=Path, help=argparse.SUPPRESS)  # the baseline process
    args = parser.parse_args()
    if args.hand is not None:
        _record_modules()
        hand_loop(args.hand)
        return
    check_same_job()
    runs: dict[str, list[dict[str, float]]] = {"deepfleet": [], "hand": []}
    for repeat in range(args.repeats):  # interleaved, alternating who goes first
        sides = ["deepfleet", "hand"] if repeat % 2 == 0 else ["hand", "deepfleet"]
        for side in sides:
            runs[side].append(measured(side))
            print(f"repeat {repeat + 1}/{args.repeats} {side}: {runs[side][-1]}", flush=True)
    packages = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in runs:
            listing = Path(tmp) / f"{side}.json"
            measured(side, record_to=listing)
            packages[side] = json.loads(listing.read_text())
    peak = {side: statistics.median(r["peak_rss_mib"] for r in rs) for side, rs in runs.items()}
    from deepfleet.devices import describe_machine

    result = {
        "benchmark": "train_rss",
        "what": "peak RSS (MiB) of a whole process, fresh each run, one CPU thread, medians",
        "job": "src/deepfleet/examples/digits.toml (prepare + train, 12 epochs, batch 64)",
        "baseline": "hand-written PyTorch loop: same CNN, sklearn digits, batch, epochs, "
        "optimizer, a validation pass an epoch, best weights saved",
        "repeats": args.repeats,
        "peak_rss_mib_median": peak,
        "seconds_median": {
            side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()
        },
        "runs": runs,
        "ratio": peak["deepfleet"] / peak["hand"],
        "target_ratio_max": TARGET,
        # train_rss itself is the recorder put in front of the deepfleet listing run.
        "packages_only_in_deepfleet": sorted(
            set(packages["deepfleet"]) - set(packages["hand"]) - {"train_rss"}
        ),
        "machine": describe_machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {k: result[k] for k in ("peak_rss_mib_median", "ratio", "packages_only_in_deepfleet")}
        )
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
