"""What the [track] loggers cost: the digits job trained with all three loggers (tensorboard,
csv, mlflow) against the same job with none.

Each run is a fresh `python -m deepfleet train` process with OMP_NUM_THREADS=1; the MLflow
logger sends to a real `mlflow server` (SQLite store) that this script starts on 127.0.0.1
and stops at the end. The two variants are interleaved, alternating which goes first, and
each is timed twice: the whole process (start-up, prepare, train) and the training stage's
own seconds from checkpoints/state.json. Reported: medians and the ratio with / without
loggers (target <= 1.02).

Writes benchmarks/results/tracking_overhead.json with the machine description.
Knobs: REPEATS (default 5), EPOCHS (epochs of the "main" phase; default: the job's),
NOTE (a remark stored with the results, e.g. other load on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from deepfleet.devices import describe_machine

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "src" / "deepfleet" / "examples" / "digits.toml"
RESULTS = ROOT / "benchmarks" / "results" / "tracking_overhead.json"
REPEATS = int(os.environ.get("REPEATS", "5"))
EPOCHS = os.environ.get("EPOCHS")
LOGGERS = ["tensorboard", "csv", "mlflow"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def mlflow_server(store: Path):
    """`mlflow server` on 127.0.0.1 with a SQLite store; yields its URI."""
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("mlflow")
    command = [str(exe)] if exe.is_file() else [shutil.which("mlflow") or "mlflow"]
    log = open(store / "server.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [
            *command,
            "server",
            "--backend-store-uri",
            f"sqlite:///{store}/mlflow.db",
            "--default-artifact-root",
            str(store / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while not _healthy(uri):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mlflow server did not start: see " + str(log.name))
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def one_run(runs_dir: Path, loggers: list[str], uri: str) -> tuple[float, float]:
    """(process wall seconds, training stage seconds) of one `deepfleet train` process."""
    runs_dir.mkdir(parents=True)
    overrides = [f"run.runs_dir={runs_dir}", f"track.loggers={json.dumps(loggers)}"]
    if "mlflow" in loggers:
        overrides.append(f"track.mlflow.tracking_uri={json.dumps(uri)}")
    if EPOCHS:
        overrides.append(f"train.phases.1.epochs={int(EPOCHS)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "deepfleet", "train", str(JOB)]
    for assignment in overrides:
        command += ["--set", assignment]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or "tracking:" in done.stderr:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    (state,) = runs_dir.glob("*/checkpoints/state.json")
    return wall, json.loads(state.read_text())["seconds"]


def write_path(run: Path, loggers: list[str], repeats: int = 3) -> dict:
    """What the training thread itself spends on records: the run's own records (from its
    metrics.jsonl) replayed through MetricsLog with `loggers`, in-process; the seconds inside
    write() summed over the records, and close() (which waits for the loggers' thread).
    Medians of `repeats` replays, each into a fresh folder beside the run."""
    from deepfleet.track import open_loggers
    from deepfleet.train import MetricsLog, read_metrics

    records = [
        {k: v for k, v in r.items() if k != "time"} for r in read_metrics(run / "metrics.jsonl")
    ]
    writes, closes = [], []
    for repeat in range(repeats):
        folder = run.parent / f"replay-{'-'.join(loggers) or 'none'}-{repeat}"
        folder.mkdir()
        shutil.copy(run / "job.toml", folder / "job.toml")
        log = MetricsLog(folder / "metrics.jsonl", open_loggers(loggers, folder))
        spent = 0.0
        for record in records:
            started = time.perf_counter()
            log.write(record)
            spent += time.perf_counter() - started
        started = time.perf_counter()
        log.close()
        closes.append(time.perf_counter() - started)
        writes.append(spent)
    return {
        "records": len(records),
        "write_s_median": statistics.median(writes),
        "close_s_median": statistics.median(closes),
    }


def _summary(runs: list[tuple[float, float]]) -> dict:
    return {
        "wall_s_median": statistics.median(w for w, _ in runs),
        "train_s_median": statistics.median(t for _, t in runs),
        "wall_s_all": [w for w, _ in runs],
        "train_s_all": [t for _, t in runs],
    }


def main() -> None:
    timed: dict[str, list[tuple[float, float]]] = {"loggers": [], "none": []}
    with tempfile.TemporaryDirectory() as tmp, mlflow_server(Path(tmp)) as uri:
        variants = [("loggers", LOGGERS), ("none", [])]
        one_run(Path(tmp) / "warmup", LOGGERS, uri)  # first-call costs: imports, caches
        (warm_run,) = (Path(tmp) / "warmup").glob("*/metrics.jsonl")
        paths = {name: write_path(warm_run.parent, loggers) for name, loggers in variants}
        print(f"training thread in MetricsLog.write: {json.dumps(paths)}")
        for repeat in range(REPEATS):  # interleaved, alternating who goes first
            for name, loggers in variants if repeat % 2 else variants[::-1]:
                timed[name].append(one_run(Path(tmp) / f"{name}-{repeat}", loggers, uri))
                wall, train = timed[name][-1]
                print(f"{repeat + 1}/{REPEATS} {name}: wall {wall:.2f}s train {train:.2f}s")
    with_loggers, without = _summary(timed["loggers"]), _summary(timed["none"])
    result = {
        "benchmark": "tracking_overhead",
        "what": "deepfleet train on the digits job with [track] loggers "
        f"{LOGGERS} (MLflow: local `mlflow server`, SQLite store) against no loggers",
        "job": "src/deepfleet/examples/digits.toml"
        + (f" with train.phases.1.epochs={EPOCHS}" if EPOCHS else ""),
        "omp_num_threads": 1,
        "repeats": REPEATS,
        "with_loggers": with_loggers,
        "without_loggers": without,
        "ratio_wall": with_loggers["wall_s_median"] / without["wall_s_median"],
        "ratio_train": with_loggers["train_s_median"] / without["train_s_median"],
        # The same records replayed in-process: the training thread's own cost of logging,
        # which the noise of a shared machine does not blur the way whole runs are blurred.
        "training_thread": {
            "with_loggers": paths["loggers"],
            "without_loggers": paths["none"],
            "extra_write_s_per_run": paths["loggers"]["write_s_median"]
            - paths["none"]["write_s_median"],
            "extra_as_fraction_of_train_s": (
                paths["loggers"]["write_s_median"] - paths["none"]["write_s_median"]
            )
            / without["train_s_median"],
        },
        "target": "ratio <= 1.02",
        "machine": describe_machine(),
    }
    if os.environ.get("NOTE"):
        result["note"] = os.environ["NOTE"]
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("ratio_wall", "ratio_train")}))


if __name__ == "__main__":
    main()
