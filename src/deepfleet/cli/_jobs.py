"""run, train, evaluate, export, predict: one small function each."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from deepfleet.cli._app import (
    OVERRIDES_HELP,
    STORAGE_OPTION_HELP,
    app,
    console,
    parse_storage_options,
)
from deepfleet.cli._deploy import PUBLIC_KEY_ENV, PUBLIC_KEY_HELP, local_bundle
from deepfleet.errors import UserError

# Each command imports the stages it runs when it runs (torch, pyarrow, onnx and the rest take
# seconds to import): `deepfleet --help` and `deepfleet train --help` load none of them.


def _print_summary(summary) -> None:
    """The run's table: one row per stage with its seconds and result."""
    table = Table(title=f"run {summary.paths.root.name}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    from deepfleet.evaluate import headline

    fit = summary.fit
    best = (
        f"best {fit.monitor} {fit.best_value:.4f} (epoch {fit.best_epoch})"
        if fit and fit.best_value is not None
        else f"last epoch {fit.best_epoch}"
        if fit
        else ""
    )
    figures = headline(summary.metrics)[:2] if summary.metrics else []
    results = {
        "prepare": summary.paths.show(summary.paths.data_dir()),
        "train": f"{fit.epochs} epochs, {best}"
        + (", stopped early" if fit and fit.stopped_early else "")
        if fit
        else "",
        "evaluate": f"{summary.metrics.get('split')} "
        + ", ".join(f"{name} {value:.4f}" for name, value in figures),
        "export": summary.paths.show(summary.paths.bundle),
        "predict": f"{summary.predicted_rows} rows -> "
        + summary.paths.show(summary.paths.predictions),
    }
    for stage, seconds in summary.seconds.items():
        table.add_row(stage, f"{seconds:.1f}", results.get(stage, ""))
    console.print(table)
    console.print(f"report: {summary.paths.show(summary.paths.report / 'report.md')}")


@app.command()
def run(
    job: str = typer.Argument(None, help="Job file, or a shipped example's name (default digits)."),
    set_: list[str] = typer.Option([], "--set", help=OVERRIDES_HELP),
) -> None:
    """Run every stage of a job: prepare, train, evaluate, export, predict."""
    from deepfleet import jobs
    from deepfleet.config import load_job
    from deepfleet.train import default_progress

    config = load_job(job, set_)
    summary = jobs.run_job(config, default_progress())
    _print_summary(summary)


def _run_for(target: str, overrides: list[str]):
    """A run folder as is, or a new one for a job file."""
    from deepfleet import jobs
    from deepfleet.config import load_job
    from deepfleet.parallel import in_worker
    from deepfleet.runs import create_run, open_run
    from deepfleet.storage import is_remote

    if is_remote(target) or Path(target).is_dir():
        if overrides:
            raise UserError("--set applies to a job file, not to an existing run folder")
        return open_run(target)
    if in_worker():
        raise UserError(
            f"{target}: under torchrun, srun or a PyTorchJob every rank must get "
            "the same run folder; make one with `deepfleet train JOB "
            "--prepare-only` and pass its path"
        )
    config = load_job(target, overrides)
    paths = create_run(config)
    try:
        jobs.stage_prepare(paths, config)
    except BaseException as err:
        paths.mark_failed("prepare", err)
        raise
    return paths


@app.command()
def train(
    target: str = typer.Argument(
        ..., help="A job file (starts a new run) or a run folder (a path or a URL)."
    ),
    set_: list[str] = typer.Option([], "--set", help=OVERRIDES_HELP),
    nproc: int = typer.Option(1, "--nproc", help="Processes per node (one per GPU)."),
    nnodes: int = typer.Option(1, "--nnodes", help="Nodes in the job."),
    node_rank: int = typer.Option(
        None, "--node-rank", help="This node's rank (0 hosts the rendezvous store)."
    ),
    rdzv: str = typer.Option(None, "--rdzv", help="Rendezvous HOST:PORT every node reaches."),
    max_restarts: int = typer.Option(
        0,
        "--max-restarts",
        help="Restart failed workers this many times; they resume from the last checkpoint.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue a run folder from its latest committed checkpoint."
    ),
    prepare_only: bool = typer.Option(
        False,
        "--prepare-only",
        help="Only create and prepare the run folder (for torchrun/srun), print its path.",
    ),
) -> None:
    """Train a model; writes checkpoints/ and metrics.jsonl in the run folder."""
    from deepfleet import jobs
    from deepfleet.parallel import LaunchOptions, detect_env, must_launch
    from deepfleet.train import default_progress

    options = LaunchOptions(nproc, nnodes, node_rank, rdzv, max_restarts)
    options.check()  # before a run folder is made for nothing
    paths = _run_for(target, set_)
    if prepare_only:
        console.print(paths.location, soft_wrap=True)
        return
    fit = jobs.train_job(paths, options, default_progress(), resume=resume)
    if fit.already_finished:
        if detect_env().is_main:
            console.print(
                f"nothing left to train: {paths.location} finished all {fit.epochs} "
                f"epochs (best epoch {fit.best_epoch}); no file was changed",
                soft_wrap=True,
            )
        return
    if detect_env().is_main and not must_launch(options):  # rank 0 of the workers says it
        console.print(
            f"trained {fit.epochs} epochs in {fit.seconds:.1f}s; best epoch "
            f"{fit.best_epoch}; run folder {paths.location}",
            soft_wrap=True,
        )


@app.command()
def evaluate(run_folder: str = typer.Argument(..., help="A trained run folder.")) -> None:
    """Evaluate the best checkpoint; writes report/ (metrics.json, report.md, PNGs)."""
    from deepfleet import jobs
    from deepfleet.evaluate import headline
    from deepfleet.runs import open_run

    paths = open_run(run_folder)
    metrics = jobs.stage_evaluate(paths)
    paths.push()
    table = Table(title=f"{metrics['split']} split, {metrics['samples']} samples")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in headline(metrics):
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"report: {paths.show(paths.report / 'report.md')}", soft_wrap=True)


@app.command()
def export(
    run_folder: str = typer.Argument(..., help="A trained run folder (a path or a URL)."),
    out: str = typer.Option(
        None, "--out", help="Also publish the bundle at this URL (e.g. s3://bucket/models/v1)."
    ),
) -> None:
    """Export the trained model as a bundle (safetensors, ONNX, model.json; signed when
    [export] signing_key is set)."""
    from deepfleet import jobs
    from deepfleet.deploy._bundle import publish_bundle
    from deepfleet.runs import open_run, storage_options

    paths = open_run(run_folder)
    bundle = jobs.stage_export(paths)
    paths.push()
    console.print(f"bundle: {paths.show(bundle)}", soft_wrap=True)
    if out:
        published = publish_bundle(bundle, out, storage_options(paths.load_job()))
        console.print(f"published: {published}", soft_wrap=True)


@app.command()
def predict(
    bundle: str = typer.Argument(..., help="A bundle folder or URL."),
    data: str = typer.Argument(
        ...,
        help="A prepared data set, a URL of one (s3://...), a run folder, or a folder of "
        "image files (for a bundle trained on encoded images).",
    ),
    out: str = typer.Option(
        "predictions", "--out", help="Folder or URL (s3://...) for the Parquet outputs."
    ),
    split: list[str] = typer.Option([], "--split", help="Splits to predict (default all)."),
    nproc: int = typer.Option(1, "--nproc", help="Worker processes (one per GPU on CUDA)."),
    backend: str = typer.Option(
        "auto",
        "--backend",
        help="auto (onnxruntime when the bundle has ONNX, else torch), torch or onnxruntime.",
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads per process (default: the cores divided among the processes).",
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N, xpu, mps or auto."),
    batch_size: int = typer.Option(512, "--batch-size", min=1, help="Rows per model call."),
    public_key: Path = typer.Option(
        None, "--public-key", envvar=PUBLIC_KEY_ENV, help=PUBLIC_KEY_HELP
    ),
    key: str = typer.Option(
        None,
        "--key",
        help="Data key for encrypted shards (a key file, "
        "or env:NAME; default $DEEPFLEET_DATA_KEY).",
    ),
    storage_option: list[str] = typer.Option(None, "--storage-option", help=STORAGE_OPTION_HELP),
) -> None:
    """Predict with a bundle over prepared shards (Parquet keyed by each input's id) or over
    a folder of image files (keyed by each file's path).

    Resumable: a rerun skips outputs that are finished and still match their inputs.
    """
    from deepfleet.deploy import open_bundle, predict_dataset, predict_files
    from deepfleet.runs import open_run
    from deepfleet.storage import is_remote, redact

    files = False
    if not is_remote(data):
        if not Path(data).exists():
            raise UserError(f"{data}: data path does not exist")
        if (Path(data) / "job.toml").is_file():
            data = str(open_run(data).data_dir())
        files = Path(data).is_dir() and not (Path(data) / "manifest.json").exists()
    if files and (split or nproc != 1 or key):
        raise UserError("--split, --nproc and --key apply to prepared data sets, not image files")
    loaded = open_bundle(local_bundle(bundle), public_key)
    common = dict(
        backend=backend,
        device=device,
        batch_size=batch_size,
        threads=threads,
        storage_options=parse_storage_options(storage_option),
    )
    if files:
        result = predict_files(loaded, data, out, **common)
    else:
        result = predict_dataset(
            loaded, data, out, splits=split or None, nproc=nproc, key=key, **common
        )
    console.print(
        f"predicted {result['rows']} rows into {redact(out)} ({len(result['files'])} files, "
        f"{result['skipped']} already done, {result['nproc']} processes, backend "
        f"{result['backend']})"
    )
