"""`deepfleet bench` on one CUDA GPU: ResNet-50 and the decoder in bf16, and CPU against GPU.

Targets on one H100: ResNet-50 training >= 3,000 images/s at 224x224 (bf16, channels_last,
torch.compile; NVIDIA's PyTorch reference on an A100 with AMP is 2,470) and decoder MFU >= 45 %
in bf16. Writes benchmarks/results/bench_gpu.json with the device name, each report, energy per
sample, and the CPU-over-GPU ratios of the digits job (baseline: the CPU, same run). Then the
gpt's tokens/s and MFU in bf16 under ddp, fsdp, fsdp x tp and fsdp with activation
checkpointing on the visible GPUs (single with and without checkpointing on one GPU;
benchmarks/_gpu_layouts.py), under "layouts".
Exits with a message, writing nothing, where no CUDA device is visible.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from deepfleet._atomic import write_json_atomic
from deepfleet.bench import BenchRequest, InferOptions, TrainOptions, run_bench
from deepfleet.devices import describe_machine

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _gpu_layouts, next to this file
from _gpu_layouts import measure_layouts  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_gpu.json"
TARGETS = {"resnet50_images_per_s": 3000.0, "decoder_mfu": 0.45}


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device is visible: nothing measured, nothing written", file=sys.stderr)
        return 1
    fast = TrainOptions(
        precision="bf16", channels_last=True, compile=True, steps=30, repeats=5, warmup=15
    )
    results: dict = {
        "machine": describe_machine(),
        "device": torch.cuda.get_device_name(),
        "targets": TARGETS,
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="deepfleet-bench-") as tmp:
        requests = {
            "resnet50_224": BenchRequest(
                workload="resnet50-224",
                devices=["cuda"],
                run_infer=False,
                out=Path(tmp) / "r50",
                train=TrainOptions(**{**fast.to_dict(), "batch_size": 256}),
            ),
            "gpt_large": BenchRequest(
                workload="gpt-large",
                devices=["cuda"],
                run_infer=False,
                out=Path(tmp) / "gpt",
                train=TrainOptions(**{**fast.to_dict(), "channels_last": False}),
            ),
            "digits_cpu_vs_gpu": BenchRequest(
                job="digits",
                overrides=[f"run.runs_dir={tmp}/runs"],
                devices=["cpu", "cuda"],
                out=Path(tmp) / "digits",
                infer=InferOptions(batch_sizes=[1, 64, 512]),
            ),
        }
        for name, request in requests.items():
            report, _ = run_bench(request)
            results["runs"][name] = report
    r50 = results["runs"]["resnet50_224"]["train"]["cuda:0"]
    gpt = results["runs"]["gpt_large"]["train"]["cuda:0"]
    results["against_targets"] = {
        "resnet50_images_per_s": r50["samples_per_s"]["median"],
        "resnet50_over_target": r50["samples_per_s"]["median"] / TARGETS["resnet50_images_per_s"],
        "decoder_mfu": gpt["mfu"],
        "decoder_mfu_over_target": gpt["mfu"] / TARGETS["decoder_mfu"],
        "energy": {"resnet50": r50["energy"], "decoder": gpt["energy"]},
        "digits_cpu_vs_gpu": results["runs"]["digits_cpu_vs_gpu"]["comparison"],
    }
    results["layouts"] = measure_layouts()
    write_json_atomic(RESULTS, results)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
