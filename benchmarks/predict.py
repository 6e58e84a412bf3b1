"""Batch predict against a plain onnxruntime loop over the same decoded arrays, in one run.

Data: 100,000 MNIST-sized grey 28x28 uint8 images (scikit-learn's digits scaled up, shifted
and noised), written as 8 Parquet shards by the real writer. Model: the zoo CNN of the digits
job (channels 32, 64; hidden 128) for 1x28x28 inputs, exported as a bundle with ONNX.

Measured, batch 512, wall seconds of the whole call:
  plain      onnxruntime.InferenceSession(model.onnx) with its default options, run over the
             arrays already decoded and scaled in memory (reading, verifying and writing not
             included): the baseline
  predict    deepfleet.deploy.predict_dataset with backend auto, torch and onnxruntime, at
             1 and 2 processes: reading and verifying the shards, decoding, preprocessing,
             the model, and writing the Parquet predictions included
Reported: samples/s and the ratio predict / plain (samples/s); rounds interleave the plain
loop with each predict variant (each round starting one variant later) and the medians are
compared. Writes
benchmarks/results/predict.json.

Run: python benchmarks/predict.py [--rows 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from data_stream import mnist_like
from deepfleet.config import ModelSection
from deepfleet.data import Samples, decode_raw, open_shard, read_manifest, write_dataset
from deepfleet.deploy import export_bundle, load_bundle, predict_dataset
from deepfleet.devices import describe_machine
from deepfleet.models import build_model

ROOT = Path(__file__).resolve().parents[1]
BATCH = 512
VARIANTS = [
    ("auto", 1),
    ("onnxruntime", 1),
    ("torch", 1),
    ("auto", 2),
    ("onnxruntime", 2),
    ("torch", 2),
]


def make_data(folder: Path, rows: int) -> tuple[Path, Path]:
    x, y = mnist_like(rows)
    samples = Samples(
        x=x[:, None],
        y=y,
        class_names=[str(i) for i in range(10)],
        description=f"{rows} MNIST-sized images",
        scale=1.0 / 255.0,
    )
    data = folder / "data"
    write_dataset(samples, data, shards=8, val_fraction=0.0, test_fraction=0.0, seed=0)
    section = ModelSection(name="cnn", params={"channels": [32, 64], "hidden": 128})
    torch.manual_seed(0)
    model = build_model(section, (1, 28, 28), 10)
    bundle = export_bundle(
        model,
        folder / "bundle",
        name="mnist-cnn",
        model_section=section,
        input_shape=(1, 28, 28),
        class_names=samples.class_names,
        preprocessing=read_manifest(data).preprocessing,
    )
    return data, bundle


def decoded(data: Path) -> np.ndarray:
    manifest = read_manifest(data)
    raw = [decode_raw(open_shard(manifest, e).read())[1] for e in manifest.shards("train")]
    return manifest.preprocessing.apply(np.concatenate(raw))


def plain_loop(onnx_path: Path, x: np.ndarray) -> float:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    started = time.perf_counter()
    for start in range(0, len(x), BATCH):
        session.run(None, {name: x[start : start + BATCH]})
    return time.perf_counter() - started


def predict_once(bundle, data: Path, out: Path, backend: str, nproc: int) -> tuple[float, str]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = predict_dataset(bundle, data, out, backend=backend, nproc=nproc, batch_size=BATCH)
    return time.perf_counter() - started, result["backend"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="", help="e.g. auto-1,onnxruntime-1 (default all)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict.json"))
    args = parser.parse_args()
    variants = VARIANTS
    if args.variants:
        variants = [
            (v.rsplit("-", 1)[0], int(v.rsplit("-", 1)[1])) for v in args.variants.split(",")
        ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, bundle_path = make_data(folder, args.rows)
        bundle = load_bundle(bundle_path)
        x = decoded(data)
        plain: list[float] = []
        seconds: dict[str, list[float]] = {f"{b}-nproc{n}": [] for b, n in variants}
        chosen: dict[str, str] = {}
        for round_index in range(args.rounds):
            # Each round starts one variant later, so no variant always runs first.
            shift = round_index % len(variants)
            for backend, nproc in variants[shift:] + variants[:shift]:
                plain.append(plain_loop(bundle.onnx_path, x))
                key = f"{backend}-nproc{nproc}"
                wall, chosen[key] = predict_once(bundle, data, folder / "out", backend, nproc)
                seconds[key].append(wall)
                print(key, f"{wall:.1f}s", f"plain {plain[-1]:.1f}s", flush=True)
    plain_median = statistics.median(plain)
    rates = {k: args.rows / statistics.median(v) for k, v in seconds.items()}
    result = {
        "benchmark": "predict",
        "what": f"predict_dataset over {args.rows} 28x28 uint8 rows in 8 shards, digits CNN, "
        f"batch {BATCH}; baseline: a plain onnxruntime loop over the decoded arrays",
        "rounds": args.rounds,
        "plain_onnxruntime_samples_per_s": args.rows / plain_median,
        "plain_seconds_all": plain,
        "predict_samples_per_s": rates,
        "predict_seconds_all": seconds,
        "backend_used": chosen,
        "ratio_to_plain": {k: r / (args.rows / plain_median) for k, r in rates.items()},
        "machine": describe_machine(),
    }
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("plain_onnxruntime_samples_per_s", "ratio_to_plain", "backend_used")
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
