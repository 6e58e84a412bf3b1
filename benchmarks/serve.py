"""Serving benchmark: `deepfleet serve` against LitServe on the same ONNX model, same run.

Measures, on the digits CNN of examples/digits.toml (weights freshly initialised: speed does
not depend on their values):
  * throughput and p50/p99 latency of POST /predict (one sample per request), closed-loop
    clients at 1 and 32, for: deepfleet with dynamic batching, deepfleet with batching off,
    LitServe with its defaults (no batching), and LitServe with its batching (64, 2 ms);
    rounds interleaved, medians reported, ratios against LitServe; with --before-src DIR also
    deepfleet from another commit's src/ (batching on), so a change's own cost is measured
    in the same run as the comparison;
  * a 30 s run of 32 clients against deepfleet (p50, p99, non-200 answers, server memory);
  * onnxruntime against torch eager, in process, at batch 1 and 64.

LitServe runs from its own virtual environment (--litserve-python, default
/work/venv-litserve/bin/python, or $LITSERVE_PYTHON); it is never installed in the project's.
Run: python benchmarks/serve.py   -> benchmarks/results/serve.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from _loadgen import http_request, oip_json_body, run_load
from deepfleet.config import load_job
from deepfleet.data import load_source
from deepfleet.deploy import export_bundle, load_bundle
from deepfleet.deploy._backends import make_backend
from deepfleet.devices import describe_machine
from deepfleet.models import build_model

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_LITSERVE = os.environ.get("LITSERVE_PYTHON", "/work/venv-litserve/bin/python")


def digits_cnn_bundle(folder: Path) -> Path:
    job = load_job("digits")
    torch.manual_seed(0)
    model = build_model(job.model, (1, 8, 8), 10)
    return export_bundle(
        model,
        folder / "bundle",
        name="digits",
        model_section=job.model,
        input_shape=(1, 8, 8),
        class_names=[str(i) for i in range(10)],
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    def __init__(self, name: str, cmd: list[str], ready_url: str, env: dict, log: Path):
        self.name, self.ready_url = name, ready_url
        self.port = int(ready_url.split(":")[2].split("/")[0])
        self._log = open(log, "wb")  # noqa: SIM115
        # A session of its own: stop() ends the server and every process it started.
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}")
            try:
                if httpx.get(self.ready_url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready in {timeout}s")

    def rss_mib(self) -> float:
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        kib = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kib += int(line.split()[1])
        return round(kib / 1024, 1)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                time.sleep(0.5)  # let the group's other members exit too
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers of the group, if any
        self._log.close()


def start_servers(
    bundle: Path, litserve_python: str | None, logs: Path, token: str, before: Path | None = None
):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DEEPFLEET_SERVE_TOKEN": token}
    variants = [("deepfleet_batching", [], env), ("deepfleet_no_batching", ["--no-batching"], env)]
    if before is not None:  # another source tree of deepfleet (an earlier commit), batching on
        variants.append(("deepfleet_before", [], {**env, "PYTHONPATH": str(before)}))
    servers = {}
    for name, extra, server_env in variants:
        port = free_port()
        servers[name] = Proc(
            name,
            [sys.executable, "-m", "deepfleet", "serve", str(bundle), "--port", str(port), *extra],
            f"http://127.0.0.1:{port}/v2/health/ready",
            server_env,
            logs / name,
        )
    if litserve_python:
        lit_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        for name, batch in (("litserve", 1), ("litserve_batching", 64)):
            port = free_port()
            servers[name] = Proc(
                name,
                [
                    litserve_python,
                    str(HERE / "_litserve_app.py"),
                    str(bundle),
                    str(port),
                    str(batch),
                ],
                f"http://127.0.0.1:{port}/health",
                lit_env,
                logs / name,
            )
    for server in servers.values():
        server.wait_ready()
    return servers


def serving_rounds(servers, samples: np.ndarray, token: str, rounds: int, seconds: float):
    bodies = [json.dumps({"instances": [s.tolist()]}).encode() for s in samples]
    raw: dict[str, dict[int, list[dict]]] = {n: {1: [], 32: []} for n in servers}
    for r in range(rounds):
        for clients in (1, 32):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                port = servers[name].port
                requests = [http_request(port, "/predict", b, token) for b in bodies]
                run_load(port, requests, clients, 1.0)  # warm the connections and caches
                result = run_load(port, requests, clients, seconds).summary()
                raw[name][clients].append(result)
                print(
                    f"round {r} {name:>22} {clients:>2} clients: "
                    f"{result['throughput_rps']:8.1f} req/s  p99 {result['p99_ms']:7.2f} ms "
                    f"codes {result['codes']}",
                    flush=True,
                )
    medians = {
        name: {
            str(c): {
                "throughput_rps": statistics.median(x["throughput_rps"] for x in runs),
                "p50_ms": statistics.median(x["p50_ms"] for x in runs),
                "p99_ms": statistics.median(x["p99_ms"] for x in runs),
                "non_200": sum(x["requests"] - x["codes"].get("200", 0) for x in runs),
                "failures": sum(x["failures"] for x in runs),
            }
            for c, runs in per.items()
        }
        for name, per in raw.items()
    }
    return medians, raw


def ratios(medians: dict) -> dict:
    out = {}
    ours = medians["deepfleet_batching"]
    for c in ("1", "32"):
        off = medians["deepfleet_no_batching"][c]
        out[f"batching_vs_off_throughput_{c}_clients"] = round(
            ours[c]["throughput_rps"] / off["throughput_rps"], 2
        )
        out[f"batching_vs_off_p99_{c}_clients"] = round(ours[c]["p99_ms"] / off["p99_ms"], 2)
        for ref in ("litserve", "litserve_batching", "deepfleet_before"):
            if ref in medians:
                other = medians[ref][c]
                out[f"vs_{ref}_throughput_{c}_clients"] = round(
                    ours[c]["throughput_rps"] / other["throughput_rps"], 2
                )
                out[f"vs_{ref}_p99_{c}_clients"] = round(ours[c]["p99_ms"] / other["p99_ms"], 2)
    return out


def load_run(server: Proc, samples: np.ndarray, token: str, seconds: float) -> dict:
    requests = [
        http_request(server.port, "/v2/models/digits/infer", oip_json_body(s), token)
        for s in samples
    ]
    run_load(server.port, requests, 32, 1.0)
    before = server.rss_mib()
    result = run_load(server.port, requests, 32, seconds).summary()
    return {
        **result,
        "endpoint": "/v2/models/digits/infer",
        "rss_mib_before": before,
        "rss_mib_after": server.rss_mib(),
    }


class _OneThread:
    """torch eager with one intra-op thread: on a busy small machine torch's default pool
    can stall badly, so both settings are reported."""

    def __init__(self, run):
        self.run = run

    def __call__(self, x):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.run(x)
        finally:
            torch.set_num_threads(threads)


def backend_bench(bundle_path: Path, samples: np.ndarray, repeats: int = 5) -> dict:
    bundle = load_bundle(bundle_path)
    eager = make_backend(bundle, "torch")
    backends = {
        "onnxruntime": make_backend(bundle, "onnxruntime"),
        "torch_eager": eager,
        "torch_eager_1_thread": _OneThread(eager),
    }
    out = {"threads": {"onnxruntime": os.cpu_count(), "torch_eager": torch.get_num_threads()}}
    for batch in (1, 64):
        x = np.ascontiguousarray(np.resize(samples, (batch, 1, 8, 8)).astype(np.float32))
        calls = 500 if batch == 1 else 60
        times: dict[str, list[float]] = {k: [] for k in backends}
        for _ in range(repeats):  # interleaved, so all see the same background load
            for name, run in backends.items():
                run(x)
                started = time.perf_counter()
                for _ in range(calls):
                    run(x)
                times[name].append((time.perf_counter() - started) / calls * 1e6)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[f"batch_{batch}"] = {
            **{f"{k}_us_per_call": round(v, 1) for k, v in med.items()},
            "onnxruntime_speedup_vs_torch_eager": round(med["torch_eager"] / med["onnxruntime"], 2),
            "onnxruntime_speedup_vs_torch_eager_1_thread": round(
                med["torch_eager_1_thread"] / med["onnxruntime"], 2
            ),
        }
    return out


def litserve_version(python: str) -> str | None:
    done = subprocess.run(
        [python, "-c", "import litserve; print(litserve.__version__)"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--litserve-python", default=DEFAULT_LITSERVE)
    parser.add_argument(
        "--before-src",
        type=Path,
        help="also serve from this src/ of another deepfleet commit (batching on), to compare",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve.json")
    args = parser.parse_args()
    litserve_python = args.litserve_python if Path(args.litserve_python).exists() else None
    if litserve_python is None:
        print(f"LitServe not found at {args.litserve_python}: comparing deepfleet only")
    digits = load_source("digits")
    samples = (digits.x[:64].astype(np.float32) * np.float32(digits.scale)).reshape(-1, 1, 8, 8)
    token = secrets.token_hex(16)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = digits_cnn_bundle(Path(tmp))
        backends = backend_bench(bundle, samples)
        print("backends:", json.dumps(backends), flush=True)
        servers = start_servers(bundle, litserve_python, Path(tmp), token, args.before_src)
        try:
            medians, raw = serving_rounds(servers, samples, token, args.rounds, args.seconds)
            load = load_run(servers["deepfleet_batching"], samples, token, args.load_seconds)
            print("load:", json.dumps(load), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    result = {
        "benchmark": "serve",
        "model": "digits CNN (examples/digits.toml), ONNX via onnxruntime CPU in every server",
        "request": "POST /predict, one 1x8x8 sample per request, closed-loop clients on loopback",
        "baseline": "LitServe (defaults: no batching) serving the same model.onnx",
        "settings": {
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "deepfleet": "1 worker, 1 replica, max batch 64, max delay 2 ms",
            "litserve_batching": "max_batch_size 64, batch_timeout 2 ms",
            "deepfleet_before": str(args.before_src) if args.before_src else None,
        },
        "serving_medians": medians,
        "ratios": ratios(medians),
        "load_32_clients": load,
        "backends_cpu": backends,
        "litserve_version": litserve_version(litserve_python) if litserve_python else None,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "machine": describe_machine(),
        "raw_runs": raw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": result["ratios"], "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
