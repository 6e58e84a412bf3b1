"""`deepfleet bench` (measure) and `deepfleet bench compare A.json B.json` (ratios)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepfleet.cli._app import OVERRIDES_HELP, app, console
from deepfleet.errors import UserError

bench_app = typer.Typer(
    help="Measure training and inference speed, MFU and energy.", invoke_without_command=True
)
app.add_typer(bench_app, name="bench")


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise UserError(f"{option}: values must be >= 1, got {text!r}")
    return values


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@bench_app.callback()
def bench(
    ctx: typer.Context,
    workload: str = typer.Option(
        None,
        "--workload",
        "-w",
        help="A synthetic workload: mlp, "
        "cnn, resnet18-32, resnet18-224, resnet50-32, resnet50-224, "
        "gpt, gpt-large.",
    ),
    job: str = typer.Option(
        None,
        "--job",
        "-j",
        help="A job file or shipped example (digits): its model, optimizer and real training data.",
    ),
    set_: list[str] = typer.Option([], "--set", help=OVERRIDES_HELP),
    devices: str = typer.Option("cpu", "--devices", help="Comma-separated: cpu, cuda, cuda:N."),
    nproc: str = typer.Option(
        "",
        "--nproc",
        help="Process counts for a scaling sweep, e.g. 1,2,4,8 (on the first device).",
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Training batch size per process (default: the workload's).",
    ),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Inference batch sizes."),
    steps: int = typer.Option(20, "--steps", min=1, help="Timed training steps per repeat."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed repeats (median, spread)."),
    warmup: int = typer.Option(5, "--warmup", min=0, help="Untimed warm-up steps/calls."),
    iterations: int = typer.Option(
        30, "--iterations", min=1, help="Timed inference calls per batch size."
    ),
    precision: str = typer.Option(
        None, "--precision", help="fp32, tf32, bf16 or fp16 (default: the workload's)."
    ),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC memory format."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the training model."),
    data_on_device: bool = typer.Option(
        False,
        "--data-on-device",
        help="Synthetic workloads: keep the random batches on the GPU (no copy/step).",
    ),
    backends: str = typer.Option("torch,onnxruntime", "--backends", help="Inference backends."),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads for torch and onnxruntime (default: theirs)."
    ),
    profile: bool = typer.Option(
        False,
        "--profile",
        help="After the timed training steps, run --steps more under torch.profiler: a Chrome "
        "trace and top_ops.md per device in the report folder's profile/ (untimed).",
    ),
    no_train: bool = typer.Option(False, "--no-train", help="Skip the training benchmark."),
    no_infer: bool = typer.Option(False, "--no-infer", help="Skip the inference benchmark."),
    out: Path = typer.Option(
        None,
        "--out",
        help="Report folder (default: the job's run "
        "folder/bench, or runs/bench-<workload>-<time>).",
    ),
) -> None:
    """Benchmark a workload on each device; writes bench.json, bench.md and PNG charts."""
    if ctx.invoked_subcommand is not None:
        return
    from deepfleet.bench import BenchProgress, BenchRequest, InferOptions, TrainOptions, run_bench

    if precision is not None and precision not in ("fp32", "tf32", "bf16", "fp16"):
        raise UserError(f"--precision: must be fp32, tf32, bf16 or fp16, got {precision!r}")
    request = BenchRequest(
        workload=workload,
        job=job,
        overrides=set_,
        devices=_names(devices),
        nproc=_int_list(nproc, "--nproc"),
        train=TrainOptions(
            batch_size=batch_size,
            steps=steps,
            repeats=repeats,
            warmup=warmup,
            precision=precision,
            channels_last=channels_last,
            compile=compile_,
            data_on_device=data_on_device,
            profile=profile,
        ),
        infer=InferOptions(
            batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
            iterations=iterations,
            warmup=warmup,
            backends=_names(backends),
            precision=precision,
            channels_last=channels_last,
        ),
        threads=threads,
        run_train=not no_train,
        run_infer=not no_infer,
        out=out,
    )
    report, folder = run_bench(request, BenchProgress())
    _print_summary(report)
    console.print(f"report: {folder / 'bench.md'} (and bench.json, PNG charts)")


def _print_summary(report: dict) -> None:
    table = Table(title=f"bench {report['workload']['name']}")
    for column in ("device", "samples/s (median)", "MFU", "energy"):
        table.add_column(column)
    for device, r in report["train"].items():
        energy = r["energy"]
        cell = (
            f"{energy['joules_per_sample']['median']:.3g} J/sample"
            if energy["measured"]
            else energy["note"]
        )
        table.add_row(device, f"{r['samples_per_s']['median']:.1f}", f"{r['mfu'] * 100:.1f}%", cell)
    if report["train"]:
        console.print(table)
    for row in (report.get("comparison") or {}).get("rows", []):
        console.print(
            f"{row['device']}: speed x{row['speed_ratio']:.2f}"
            + (f", energy x{row['energy_ratio']:.2f}" if row["energy_ratio"] else "")
        )
    for row in (report.get("scaling") or {}).get("rows", []):
        console.print(
            f"{row['nproc']} processes: {row['samples_per_s']['median']:.1f} "
            f"samples/s, efficiency {row['efficiency'] * 100:.0f}%"
        )


@bench_app.command("compare")
def compare(
    a: Path = typer.Argument(..., help="The baseline report (bench.json)."),
    b: Path = typer.Argument(..., help="The report compared with it."),
) -> None:
    """Print the ratio B/A of every figure the two reports share."""
    from deepfleet.bench import compare_reports, load_report

    rows = compare_reports(load_report(a), load_report(b))
    table = Table(title=f"B/A: {b} over {a}")
    for column in ("figure", "A", "B", "B/A", "better"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for r in rows:
        ratio = f"{r['ratio']:.3f}" if r["ratio"] is not None else "—"
        table.add_row(r["figure"], f"{r['a']:.4g}", f"{r['b']:.4g}", ratio, r["better"] or "=")
    console.print(table)
