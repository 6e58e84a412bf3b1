"""Binary tensor data against JSON tensors: `deepfleet serve` on a large input, same run.

One server (1 worker, dynamic batching, default settings) serves a small CNN bundle on a
3x224x224 float32 input (weights freshly initialised: speed does not depend on their
values). Closed-loop clients on loopback send one sample per request to
POST /v2/models/cnn224/infer, either
  * json:   the tensor as a JSON list of 150,528 numbers, the answer as JSON; or
  * binary: the OIP binary tensor data extension as tritonclient sends it by default
            (Inference-Header-Content-Length, parameters.binary_data_size, 602,112 raw
            bytes), every output asked back as binary data (binary_data_output).
Rounds interleave the two encodings so both see the same background load; medians and
the binary/json ratios of throughput (answers with 200 per second: a request that waited past
the server's 10 s timeout got 503 and does not count) and p99 at 1 and 32 clients are
reported. Before timing,
one answer of each kind is decoded and the logits compared: the encodings must agree.

Run: python benchmarks/serve_binary.py   -> benchmarks/results/serve_binary.json
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

import httpx
import numpy as np
import torch

from _loadgen import http_request, oip_json_body, run_load
from deepfleet.config import ModelSection
from deepfleet.deploy import export_bundle
from deepfleet.devices import describe_machine
from deepfleet.models import build_model
from serve import ROOT, Proc, free_port

HERE = Path(__file__).resolve().parent
SHAPE = (3, 224, 224)
MODEL = ModelSection(name="cnn", params={"channels": [4], "hidden": 16})
PATH = "/v2/models/cnn224/infer"
CLIENTS = (1, 32)


def cnn_bundle(folder: Path) -> Path:
    torch.manual_seed(0)
    return export_bundle(
        build_model(MODEL, SHAPE, 10),
        folder / "bundle",
        name="cnn224",
        model_section=MODEL,
        input_shape=SHAPE,
        class_names=[str(i) for i in range(10)],
    )


def binary_body(sample: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """(body, headers) as tritonclient builds them with its defaults."""
    raw = sample.astype("<f4").tobytes()
    tensor = {"name": "input", "shape": [1, *SHAPE], "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(raw)}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + raw, headers


def binary_request(port: int, token: str, sample: np.ndarray) -> bytes:
    body, headers = binary_body(sample)
    return http_request(port, PATH, body, token, headers)


def check_agreement(url: str, token: str, sample: np.ndarray) -> float:
    """The largest difference between the logits of a JSON and a binary round trip."""
    auth = {"Authorization": f"Bearer {token}"}
    plain = httpx.post(url + PATH, content=oip_json_body(sample), headers=auth, timeout=60)
    plain.raise_for_status()
    by_json = next(o for o in plain.json()["outputs"] if o["name"] == "logits")["data"]
    body, headers = binary_body(sample)
    reply = httpx.post(url + PATH, content=body, headers={**auth, **headers}, timeout=60)
    reply.raise_for_status()
    split = int(reply.headers["inference-header-content-length"])
    outputs, offset = json.loads(reply.content[:split])["outputs"], split
    for out in outputs:
        size = out["parameters"]["binary_data_size"]
        if out["name"] == "logits":
            by_binary = np.frombuffer(reply.content[offset : offset + size], "<f4")
        offset += size
    return float(np.abs(np.array(by_json, np.float32) - by_binary).max())


def _ok_rps(run: dict) -> float:
    """Answers with 200 per second: a request that timed out (503) is no throughput."""
    return run["codes"].get("200", 0) / run["seconds"]


def rounds(port: int, token: str, samples: np.ndarray, n: int, seconds: float):
    requests = {
        "json": [http_request(port, PATH, oip_json_body(s), token) for s in samples],
        "binary": [binary_request(port, token, s) for s in samples],
    }
    sizes = {k: len(v[0]) for k, v in requests.items()}
    raw = {name: {c: [] for c in CLIENTS} for name in requests}
    for r in range(n):
        for clients in CLIENTS:
            for name in list(requests) if r % 2 == 0 else list(reversed(requests)):
                run_load(port, requests[name], clients, 1.0)  # warm connections and caches
                result = run_load(port, requests[name], clients, seconds).summary()
                raw[name][clients].append(result)
                print(
                    f"round {r} {name:>6} {clients:>2} clients: {_ok_rps(result):7.1f} ok/s"
                    f"  p50 {result['p50_ms']:8.1f} ms  p99 {result['p99_ms']:8.1f} ms"
                    f"  codes {result['codes']}",
                    flush=True,
                )
    medians = {
        name: {
            str(c): {
                "throughput_200_rps": round(statistics.median(_ok_rps(x) for x in runs), 1),
                "p50_ms": statistics.median(x["p50_ms"] for x in runs),
                "p99_ms": statistics.median(x["p99_ms"] for x in runs),
                "non_200": sum(x["requests"] - x["codes"].get("200", 0) for x in runs),
                "failures": sum(x["failures"] for x in runs),
            }
            for c, runs in per.items()
        }
        for name, per in raw.items()
    }
    return medians, sizes, raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve_binary.json")
    args = parser.parse_args()
    samples = np.random.default_rng(0).random((8, *SHAPE), dtype=np.float32)
    token = secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DEEPFLEET_SERVE_TOKEN": token}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = cnn_bundle(Path(tmp))
        port = free_port()
        server = Proc(
            "deepfleet",
            [sys.executable, "-m", "deepfleet", "serve", str(bundle), "--port", str(port)],
            f"http://127.0.0.1:{port}/v2/health/ready",
            env,
            Path(tmp) / "server.log",
        )
        try:
            server.wait_ready()
            difference = check_agreement(f"http://127.0.0.1:{port}", token, samples[0])
            assert difference == 0.0, f"json and binary logits differ by {difference}"
            medians, sizes, raw = rounds(port, token, samples, args.rounds, args.seconds)
        finally:
            server.stop()
    ratios = {}
    for c in map(str, CLIENTS):
        b, j = medians["binary"][c], medians["json"][c]
        ratios[f"binary_vs_json_throughput_{c}_clients"] = round(
            b["throughput_200_rps"] / max(j["throughput_200_rps"], 1e-9), 2
        )
        ratios[f"binary_vs_json_p99_{c}_clients"] = round(b["p99_ms"] / j["p99_ms"], 3)
    result = {
        "benchmark": "serve_binary",
        "model": "cnn channels [4], hidden 16, on 3x224x224 float32; onnxruntime CPU",
        "request": f"POST {PATH}, one sample per request, closed-loop clients",
        "request_bytes": sizes,
        "baseline": "the same server and requests with the tensor as JSON (json)",
        "settings": {
            "rounds": args.rounds,
            "seconds_per_run": args.seconds,
            "deepfleet": "1 worker, 1 replica, max batch 64, max delay 2 ms, timeout 10 s",
            "clients": CLIENTS,
        },
        "json_and_binary_logits_max_difference": difference,
        "medians": medians,
        "ratios": ratios,
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "machine": describe_machine(),
        "raw_runs": raw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": result["ratios"], "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
