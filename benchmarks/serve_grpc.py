"""OIP v2 over gRPC against OIP v2 over HTTP (JSON tensors): one `deepfleet serve` process
serving both ports, the same bundle, the same batcher, the same run.

Measures throughput and p50/p99 latency of one-sample infer requests from 32 closed-loop
clients on loopback, in interleaved rounds (medians reported), for:
  * http_json   POST /v2/models/digits/infer, FP32 data as JSON numbers (the baseline);
  * grpc_raw    ModelInfer with raw_input_contents (what tritonclient.grpc sends);
  * grpc_typed  ModelInfer with fp32_contents.
The model is the digits CNN of examples/digits.toml (weights freshly initialised: speed does
not depend on their values), served by onnxruntime on the CPU.

Run: python benchmarks/serve_grpc.py   -> benchmarks/results/serve_grpc.json
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from _grpc_loadgen import run_grpc_load
from _loadgen import http_request, oip_json_body, run_load
from deepfleet.data import load_source
from deepfleet.devices import describe_machine
from serve import ROOT, Proc, digits_cnn_bundle, free_port

HERE = Path(__file__).resolve().parent
CLIENTS = 32
MODEL = "digits"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
VARIANTS = ("http_json", "grpc_raw", "grpc_typed")


def http_bodies(samples: np.ndarray, port: int, token: str) -> list[bytes]:
    path = f"/v2/models/{MODEL}/infer"
    return [http_request(port, path, oip_json_body(s), token) for s in samples]


def grpc_bodies(samples: np.ndarray, typed: bool) -> list[bytes]:
    """Serialised with tritonclient's protobuf modules (an independent encoder)."""
    bodies = []
    for s in samples:
        request = pb.ModelInferRequest(model_name=MODEL)
        tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
        if typed:
            tensor.contents.fp32_contents.extend(s.ravel().tolist())
        else:
            request.raw_input_contents.append(s.astype("<f4").tobytes())
        bodies.append(request.SerializeToString())
    return bodies


def one_run(variant: str, server: Proc, grpc_target: str, bodies: dict, token: str, seconds):
    if variant == "http_json":
        run_load(server.port, bodies[variant], CLIENTS, 1.0)  # warm connections and caches
        return run_load(server.port, bodies[variant], CLIENTS, seconds).summary()
    metadata = (("authorization", f"Bearer {token}"),)
    run_grpc_load(grpc_target, METHOD, bodies[variant], CLIENTS, 1.0, metadata=metadata)
    return run_grpc_load(
        grpc_target, METHOD, bodies[variant], CLIENTS, seconds, metadata=metadata
    ).summary()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve_grpc.json")
    args = parser.parse_args()
    digits = load_source("digits")
    samples = (digits.x[:64].astype(np.float32) * np.float32(digits.scale)).reshape(-1, 1, 8, 8)
    token = secrets.token_hex(16)
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = digits_cnn_bundle(Path(tmp))
        port, grpc_port = free_port(), free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DEEPFLEET_SERVE_TOKEN": token}
        cmd = [sys.executable, "-m", "deepfleet", "serve", str(bundle), "--port", str(port)]
        server = Proc(
            "deepfleet",
            [*cmd, "--grpc-port", str(grpc_port)],
            f"http://127.0.0.1:{port}/v2/health/ready",
            env,
            Path(tmp) / "server.log",
        )
        try:
            server.wait_ready()
            bodies = {
                "http_json": http_bodies(samples, port, token),
                "grpc_raw": grpc_bodies(samples, typed=False),
                "grpc_typed": grpc_bodies(samples, typed=True),
            }
            target = f"127.0.0.1:{grpc_port}"
            for r in range(args.rounds):
                order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    result = one_run(variant, server, target, bodies, token, args.seconds)
                    runs[variant].append(result)
                    print(
                        f"round {r} {variant:>10}: {result['throughput_rps']:8.1f} req/s  "
                        f"p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:7.2f} ms  "
                        f"codes {result['codes']} failures {result['failures']}",
                        flush=True,
                    )
        finally:
            server.stop()
    medians = {
        v: {
            "throughput_rps": statistics.median(x["throughput_rps"] for x in rs),
            "p50_ms": statistics.median(x["p50_ms"] for x in rs),
            "p99_ms": statistics.median(x["p99_ms"] for x in rs),
            "not_ok": sum(
                x["requests"] - x["codes"].get("200", 0) - x["codes"].get("OK", 0) for x in rs
            ),
            "failures": sum(x["failures"] for x in rs),
        }
        for v, rs in runs.items()
    }
    base = medians["http_json"]
    ratios = {
        f"{v}_vs_http_json_{k}": round(medians[v][k] / base[k], 2)
        for v in ("grpc_raw", "grpc_typed")
        for k in ("throughput_rps", "p99_ms")
    }
    result = {
        "benchmark": "serve_grpc",
        "model": "digits CNN (examples/digits.toml), ONNX via onnxruntime CPU",
        "request": "one 1x8x8 FP32 sample per infer request, 32 closed-loop clients, loopback",
        "baseline": "http_json: the same server's OIP v2 REST route with JSON tensors",
        "settings": {
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "clients": CLIENTS,
            "server": "one deepfleet serve process, HTTP and --grpc-port, 1 worker, "
            "1 replica, max batch 64, max delay 2 ms, bearer token on",
            "clients_side": "HTTP: raw asyncio HTTP/1.1 keep-alive (_loadgen); gRPC: grpc.aio, "
            "one channel and connection per client, pre-serialised bytes (_grpc_loadgen)",
        },
        "medians": medians,
        "ratios": ratios,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "machine": describe_machine(),
        "raw_runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
