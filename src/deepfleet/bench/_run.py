"""`deepfleet bench`: the whole measurement for one workload over devices and process counts."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from deepfleet._atomic import atomic_dir
from deepfleet.bench._env import environment
from deepfleet.bench._infer import BACKENDS, InferOptions, bench_infer
from deepfleet.bench._peak import Peak, device_peak
from deepfleet.bench._progress import BenchProgress, silent_progress
from deepfleet.bench._report import write_report
from deepfleet.bench._scaling import bench_scaling
from deepfleet.bench._train import TrainOptions, bench_train, step_figures
from deepfleet.bench._workloads import Workload, job_workload, synthetic_workload
from deepfleet.config import load_job
from deepfleet.energy import EnergyMeter, meter_for
from deepfleet.errors import UserError
from deepfleet.jobs import stage_prepare
from deepfleet.runs import create_run

SCHEMA = "deepfleet.bench/1"
PROFILE = "profile"  # --profile: the report folder's sub-folder of traces
NOISE_NOTE = (
    "timings are medians of the repeats; min/max show the spread. On a machine shared "
    "with other work, compare devices or runs only within one report or with "
    "`deepfleet bench compare`, and expect the spread to be wide"
)


@dataclass
class BenchRequest:
    """Everything `deepfleet bench` was asked to do."""

    workload: str | None = None  # a synthetic workload's name ...
    job: str | None = None  # ... or a job file (or shipped example name)
    overrides: list[str] = field(default_factory=list)  # --set for the job file
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    nproc: list[int] = field(default_factory=list)
    train: TrainOptions = field(default_factory=TrainOptions)
    infer: InferOptions = field(default_factory=InferOptions)
    threads: int | None = None  # CPU intra-op threads for torch and onnxruntime (None: default)
    run_train: bool = True
    run_infer: bool = True
    out: Path | None = None
    meters: dict[str, EnergyMeter] | None = None  # tests inject a labelled fake meter here


def parse_devices(names: list[str]) -> tuple[list[torch.device], list[str]]:
    """Devices that exist here, and a note for each asked-for device that does not."""
    found, notes = [], []
    for name in names:
        if name == "cpu":
            found.append(torch.device("cpu"))
        elif name.startswith("cuda"):
            try:
                device = torch.device(name)
            except RuntimeError:
                raise UserError(f"--devices: not a device name: {name!r}") from None
            if not torch.cuda.is_available():
                notes.append(f"{name}: skipped, no CUDA device is visible on this machine")
            elif (device.index or 0) >= torch.cuda.device_count():
                notes.append(f"{name}: skipped, only {torch.cuda.device_count()} CUDA devices")
            else:
                found.append(torch.device("cuda", device.index or 0))
        else:
            raise UserError(f"--devices: unknown device {name!r} (use cpu, cuda or cuda:N)")
    if not found:
        raise UserError(f"--devices: none of {', '.join(names)} is available here")
    return found, notes


def _resolve(request: BenchRequest) -> tuple[Workload, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if (request.workload is None) == (request.job is None):
        raise UserError("give exactly one of --workload NAME or --job FILE")
    if request.overrides and request.job is None:
        raise UserError("--set applies to a job file (--job), not to a synthetic workload")
    if request.job is not None:
        job = load_job(request.job, request.overrides)
        paths = create_run(job)  # the benchmark lives in the job's run folder, data prepared
        stage_prepare(paths, job)
        return job_workload(paths.job_file, paths.data_dir()), request.out or paths.root / "bench"
    workload = synthetic_workload(request.workload)
    return workload, request.out or Path("runs") / f"bench-{workload.name}-{stamp}"


def comparison(train: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Speed and energy ratios of every device against the first one measured."""
    if len(train) < 2:
        return None
    baseline, base = next(iter(train.items()))
    rows = []
    for device, result in train.items():
        energy, base_energy = result["energy"], base["energy"]
        energy_ratio = None
        if energy["measured"] and base_energy["measured"]:
            energy_ratio = (
                base_energy["joules_per_sample"]["median"] / energy["joules_per_sample"]["median"]
            )
        rows.append(
            {
                "device": device,
                "speed_ratio": result["samples_per_s"]["median"] / base["samples_per_s"]["median"],
                "energy_ratio": energy_ratio,
            }
        )
    return {
        "baseline": baseline,
        "rows": rows,
        "meaning": "speed_ratio = samples/s over the baseline's; energy_ratio = baseline "
        "J/sample over this device's (both > 1: better than the baseline)",
    }


def run_bench(
    request: BenchRequest, progress: BenchProgress | None = None
) -> tuple[dict[str, Any], Path]:
    """Measure, then write bench.json, bench.md and the charts; returns (report, folder)."""
    progress = progress or silent_progress()
    devices, notes = parse_devices(request.devices)
    if request.infer.backends and (bad := set(request.infer.backends) - set(BACKENDS)):
        raise UserError(f"--backends: unknown {sorted(bad)} (choose from {', '.join(BACKENDS)})")
    if request.threads is not None:
        if request.threads < 1:
            raise UserError("--threads: must be >= 1")
        torch.set_num_threads(request.threads)
        request.infer.threads = request.threads
    workload, out = _resolve(request)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: output folder exists and is not empty")
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "workload": {
            "name": workload.name,
            "description": workload.description,
            "model": workload.model.model_dump(),
            "input_shape": list(workload.input_shape),
            "num_classes": workload.num_classes,
            "tokens_per_sample": workload.tokens_per_sample,
            "spec": workload.spec,
        },
        "settings": {
            "train": request.train.to_dict(),
            "infer": request.infer.to_dict(),
            "devices": request.devices,
            "nproc": request.nproc,
            "torch_cpu_threads": torch.get_num_threads(),
        },
        "environment": environment(),
        "train": {},
        "infer": [],
        "comparison": None,
        "scaling": None,
        "notes": [NOISE_NOTE, *notes],
    }
    # --profile: traces are written here, then copied into the report folder's profile/.
    staged = Path(tempfile.mkdtemp(prefix="deepfleet-profile-")) if request.train.profile else None
    try:
        with tempfile.TemporaryDirectory(prefix="deepfleet-bench-") as tmp:
            for device in devices:
                meter = (request.meters or {}).get(str(device)) or meter_for(device)
                if request.run_train:
                    name = str(device).replace(":", "-")
                    result = bench_train(
                        workload,
                        device,
                        request.train,
                        meter=meter,
                        progress=progress,
                        profile_dir=staged / name if staged else None,
                    )
                    if "profile" in result:
                        result["profile"]["folder"] = f"{PROFILE}/{name}"
                        report["notes"].append(
                            f"{device}: torch.profiler trace and top operators in "
                            f"{PROFILE}/{name}/ (an extra, untimed repeat)"
                        )
                    report["train"][str(device)] = result
                if request.run_infer:
                    rows, infer_notes = bench_infer(
                        workload, device, request.infer, Path(tmp), progress=progress
                    )
                    report["infer"] += rows
                    report["notes"] += infer_notes
        report["comparison"] = comparison(report["train"])
        if request.nproc:
            device = devices[0]
            measured = report["train"].get(str(device))
            if measured:
                peak, flops = Peak(**measured["peak"]), measured["flops_per_step"]
            else:  # counted, and the peak looked up, for the mode the Trainer runs in
                flops, mode = step_figures(workload, device, request.train)
                peak = device_peak(device, mode)
            report["scaling"] = bench_scaling(
                workload, device.type, request.nproc, request.train, peak, flops, progress=progress
            )
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        progress.stop()
    try:
        with atomic_dir(out, replace=out.exists()) as folder:
            write_report(report, folder)
            if staged is not None and any(staged.iterdir()):
                shutil.copytree(staged, folder / PROFILE)
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    return report, out
