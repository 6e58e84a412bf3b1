"""The stages of a job, each operating on a run folder so that each can also run alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deepfleet.config import JobConfig
from deepfleet.data import (
    Manifest,
    ShardStream,
    StreamLoader,
    prepare_from_config,
    read_manifest,
)
from deepfleet.deploy import (
    LoadedBundle,
    export_bundle,
    load_bundle,
    predict_dataset,
    sign_bundle,
)
from deepfleet.devices import choose_device, set_cpu_threads
from deepfleet.errors import UserError
from deepfleet.models import build_model
from deepfleet.parallel import (
    LaunchOptions,
    build_topology,
    detect_env,
    launch,
    must_launch,
    preflight,
    process_group,
)
from deepfleet.runs import RunPaths, create_run
from deepfleet.tasks import TASKS, Task, build_task
from deepfleet.train import (
    BEST,
    LAST,
    STATE,
    FitResult,
    MetricsLog,
    ProgressSink,
    Trainer,
    is_finished,
    load_weights,
    read_metrics,
    run_split,
    seed_everything,
    split_batches,
)


def stage_prepare(paths: RunPaths, job: JobConfig) -> Manifest:
    """Shards for the run: a prepared data set is referenced (and verified), else written."""
    if job.data.prepared:
        manifest = read_manifest(job.data.prepared)  # its shards are checked as they are read
        paths.link_data(manifest.root)
        return manifest
    # The writer took every digest from the bytes it wrote: nothing to hash again here.
    return prepare_from_config(job.data, paths.shards, job.run.seed, job.task)


def task_for(job: JobConfig, manifest: Manifest) -> Task:
    """The job's task bound to the data set's targets; one line naming both when the data
    set was prepared for another task or its targets do not fit the task."""
    task = build_task(job.task.name, manifest.targets, job.task.path)
    if task.name in TASKS and manifest.task != task.name:
        raise UserError(
            f"task.name is {task.name!r} but the data set {manifest.root} was prepared for "
            f"{manifest.task!r} ({manifest.targets.describe()}); prepare it again with this "
            "task or set task.name to match"
        )
    task.output_size()  # checks the targets' form against the task
    return task


def _model_for(job: JobConfig, manifest: Manifest, task: Task) -> torch.nn.Module:
    return build_model(job.model, manifest.sample_shape, task.output_size())


def check_model_output(job: JobConfig, manifest: Manifest, task: Task, model: torch.nn.Module):
    """Run two samples through the model and check its output against the task, before any
    worker starts: a mismatch is one line naming both, never a failure mid-training."""
    prep = manifest.preprocessing
    dtype = torch.int64 if prep.tokens else torch.float32
    sample = torch.zeros((2, *manifest.sample_shape), dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(sample)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise UserError(
            f"model {job.model.name} cannot take the data's samples ({prep.input_dtype} of shape "
            f"{list(manifest.sample_shape)}): {str(err).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)
    problem = task.check(tuple(output.shape)) if isinstance(output, torch.Tensor) else None
    if not isinstance(output, torch.Tensor):
        problem = f"model {job.model.name} returns {type(output).__name__}, not a tensor"
    if problem:
        raise UserError(f"{problem} (model {job.model.name})")


def stage_train(
    paths: RunPaths, progress: ProgressSink | None = None, *, resume: bool = False
) -> FitResult:
    """Train in this process: alone, or as one rank of a job (torchrun, srun, a PyTorchJob
    or `deepfleet train --nproc N` set the rank variables). A restarted worker resumes."""
    job = paths.load_job()
    env = detect_env()
    if (resume or env.restart_count > 0) and is_finished(paths.checkpoints, job.train):
        return _fit_on_disk(paths, already_finished=True)
    set_cpu_threads(job.run.threads)
    # Each shard is checked against its sha256 when the stream first opens it.
    manifest = read_manifest(paths.data_dir())
    task = task_for(job, manifest)
    device = choose_device(job.run.device, env.local_rank)
    with process_group(env, device):
        seed_everything(job.run.seed, job.run.deterministic)
        model = _model_for(job, manifest, task)  # the same initial weights on every rank
        check_model_output(job, manifest, task, model)
        if env.world_size > 1:  # but each rank its own dropout masks
            torch.manual_seed(job.run.seed + env.rank)
        train = _train_stream(
            job,
            manifest,
            build_topology(job.train, env.world_size, model, device),
            env.rank,
            device,
        )
        val = (
            split_loader(manifest, "val", job, env.rank, env.world_size)
            if "val" in manifest.splits
            else None
        )
        log = MetricsLog(paths.metrics if env.is_main else None)
        try:
            trainer = Trainer(
                job.train,
                model,
                device,
                seed=job.run.seed,
                task=task,
                env=env,
                log=log,
                progress=progress,
                checkpoint_dir=paths.checkpoints,
                resume=resume or env.restart_count > 0,
            )
            return trainer.fit(train, val)
        finally:
            log.close()


def split_loader(
    manifest: Manifest,
    split: str,
    job: JobConfig,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int | None = None,
) -> StreamLoader:
    """A split read in order, in batches, rank `rank` taking its part (the last part padded
    from the start, so every rank runs as many batches): validation and evaluation."""
    stream = ShardStream(
        manifest,
        split,
        batch_size=batch_size or job.train.eval_batch_size,
        rank=rank,
        world_size=world_size,
        shuffle=False,
        uneven="pad",
        shuffle_buffer=batch_size or job.train.eval_batch_size,
        key=job.data.key,
    )
    return StreamLoader(stream)


def _train_stream(
    job: JobConfig, manifest: Manifest, topology, rank: int, device: torch.device
) -> StreamLoader:
    """This rank's share of the training shards. Ranks of one pipeline read the same
    batches, so the stream is cut by data-parallel rank, not by global rank."""
    data = job.data
    stream = ShardStream(
        manifest,
        "train",
        batch_size=job.train.batch_size,
        seed=job.run.seed,
        rank=topology.dp_rank(rank),
        world_size=topology.dp,
        uneven=data.uneven,
        shuffle_buffer=data.shuffle_buffer,
        cache=data.cache,
        key=data.key,
    )
    return StreamLoader(stream, num_workers=job.train.num_workers, pin_memory=device.type == "cuda")


def train_job(
    paths: RunPaths,
    options: LaunchOptions | None = None,
    progress: ProgressSink | None = None,
    *,
    resume: bool = False,
) -> FitResult:
    """Train a run folder: in this process, or on options.world_size ranks through the
    elastic agent (restarted up to options.max_restarts times, resuming each time)."""
    options = options or LaunchOptions()
    with _recorded(paths, "train"):
        if not must_launch(options):
            return stage_train(paths, progress, resume=resume)
        job = paths.load_job()
        if resume and is_finished(paths.checkpoints, job.train):
            return _fit_on_disk(paths, already_finished=True)
        manifest = read_manifest(paths.data_dir())
        task = task_for(job, manifest)
        model = _model_for(job, manifest, task)
        check_model_output(job, manifest, task, model)
        preflight(job.train, model, options.world_size)
        launch(paths.root, options, resume=resume)
        return _fit_on_disk(paths)


@contextmanager
def _recorded(paths: RunPaths, stage: str) -> Iterator[None]:
    """Mark the run folder failed when `stage` fails (rank 0 writes it), and clear the mark
    when the stage succeeds, so a half-made folder is never taken for a finished one."""
    try:
        yield
    except BaseException as err:
        if detect_env().is_main:
            paths.mark_failed(stage, err)
        raise
    if detect_env().is_main:
        paths.mark_succeeded()


def _check_not_failed(paths: RunPaths) -> None:
    failure = paths.failure()
    if failure:
        raise UserError(
            f"{paths.root}: the run failed ({failure}); train it again or resume "
            "it before evaluating or exporting it"
        )


def _fit_on_disk(paths: RunPaths, already_finished: bool = False) -> FitResult:
    """What the workers reported: state.json and the epoch lines (the last of each epoch,
    since a restarted worker repeats the lines written after its checkpoint)."""
    state = json.loads((paths.checkpoints / STATE).read_text(encoding="utf-8"))
    epochs = {r["epoch"]: r for r in read_metrics(paths.metrics) if r.get("kind") == "epoch"}
    return FitResult(
        epochs=state["epochs"],
        seconds=state["seconds"],
        best_epoch=state["best_epoch"],
        best_val_accuracy=state["best_val_accuracy"],
        history=[epochs[k] for k in sorted(epochs)],
        already_finished=already_finished,
        monitor=state.get("monitor", "val_accuracy"),
        best_value=state.get("best_value"),
        stopped_early=bool(state.get("stopped_early", False)),
    )


def _trained_model(
    paths: RunPaths, job: JobConfig, manifest: Manifest, task: Task
) -> torch.nn.Module:
    _check_not_failed(paths)
    name = BEST if job.export.checkpoint == "best" else LAST
    weights = paths.checkpoints / name
    if not weights.is_file():
        raise UserError(f"{paths.root}: no {name} checkpoint; run `deepfleet train` first")
    return load_weights(_model_for(job, manifest, task), weights)


def stage_evaluate(paths: RunPaths) -> dict[str, Any]:
    """The task's metrics over the evaluation split, read in batches (memory bounded by a
    batch), and the report."""
    from deepfleet.evaluate import evaluator_for, write_report

    job = paths.load_job()
    set_cpu_threads(job.run.threads)
    manifest = read_manifest(paths.data_dir())
    task = task_for(job, manifest)
    device = choose_device(job.run.device)
    model = _trained_model(paths, job, manifest, task).to(device)
    split = job.evaluate.split
    evaluator = evaluator_for(task)
    loader = split_loader(manifest, split, job, batch_size=job.evaluate.batch_size)
    started = time.perf_counter()
    run_split(model, split_batches(loader), [evaluator], device)
    seconds = time.perf_counter() - started
    metrics = evaluator.compute()
    metrics["split"] = split
    metrics["seconds"] = seconds
    if "tokens" in metrics:
        metrics["tokens_per_s"] = metrics["tokens"] / seconds if seconds > 0 else 0.0
    epochs = [r for r in read_metrics(paths.metrics) if r.get("kind") == "epoch"]
    write_report(
        metrics,
        epochs,
        paths.report,
        title=f"{job.run.name}: {split} split",
        samples_text=continuations(model, manifest, job) if manifest.tokens else None,
    )
    return metrics


def continuations(model: torch.nn.Module, manifest: Manifest, job: JobConfig) -> list[dict]:
    """A few prompts from the evaluation split and the model's greedy continuations, for
    the report (a language model's quality read by eye)."""
    from deepfleet.data import load_tokenizer
    from deepfleet.deploy import generate

    tokenizer = load_tokenizer(manifest.file_bytes("tokenizer.json"))
    loader = split_loader(manifest, job.evaluate.split, job, batch_size=3)
    x, _ = next(iter(loader))
    context = manifest.sample_shape[0]
    found = []
    for row in x[:3]:
        prompt = row[: max(1, context // 4)].tolist()
        new = list(generate(model, prompt, 32, 0.0, 0, job.run.seed, context))
        found.append({"prompt": tokenizer.decode(prompt), "continuation": tokenizer.decode(new)})
    return found


def stage_export(paths: RunPaths) -> Path:
    job = paths.load_job()
    manifest = read_manifest(paths.data_dir())  # export reads no shard: none is hashed
    task = task_for(job, manifest)
    model = _trained_model(paths, job, manifest, task)
    extra = {"job.toml": paths.job_file}
    if (paths.report / "metrics.json").is_file():
        extra["metrics.json"] = paths.report / "metrics.json"
    if "tokenizer.json" in manifest.raw.get("files", {}):
        manifest.file_bytes("tokenizer.json")  # checked against the manifest first
        extra["tokenizer.json"] = manifest.root / "tokenizer.json"
    bundle = export_bundle(
        model,
        paths.bundle,
        name=job.run.name,
        model_section=job.model,
        input_shape=manifest.sample_shape,
        class_names=manifest.targets.names,
        task=task,
        task_factory=job.task,
        extra_files=extra,
        extra_spec={"data_manifest_sha256": manifest.digest()},
        onnx=job.export.onnx,
        preprocessing=manifest.preprocessing,
    )
    if job.export.signing_key:
        sign_bundle(bundle, job.export.signing_key)
    return bundle


def stage_predict(paths: RunPaths, splits: list[str] | None = None) -> dict[str, Any]:
    job = paths.load_job()
    bundle: LoadedBundle = load_bundle(paths.bundle)
    return predict_dataset(
        bundle,
        paths.data_dir(),
        paths.predictions,
        splits=splits or [job.evaluate.split],
        device="cpu",
        key=job.data.key,
        threads=job.run.threads,
    )


@dataclass
class RunSummary:
    paths: RunPaths
    seconds: dict[str, float] = field(default_factory=dict)
    fit: FitResult | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    predicted_rows: int = 0


def run_job(job: JobConfig, progress: ProgressSink | None = None) -> RunSummary:
    """Every stage in order in a new run folder: prepare, train, evaluate, export, predict."""
    paths = create_run(job)
    summary = RunSummary(paths)
    set_cpu_threads(job.run.threads)  # every stage of this process, as stage_train sets it

    def timed(name: str, fn, *args):
        started = time.perf_counter()
        value = fn(*args)
        summary.seconds[name] = time.perf_counter() - started
        return value

    with _recorded(paths, "prepare"):
        timed("prepare", stage_prepare, paths, job)
    with _recorded(paths, "train"):
        summary.fit = timed("train", stage_train, paths, progress)
    with _recorded(paths, "evaluate"):
        summary.metrics = timed("evaluate", stage_evaluate, paths)
    with _recorded(paths, "export"):
        timed("export", stage_export, paths)
    with _recorded(paths, "predict"):
        summary.predicted_rows = timed("predict", stage_predict, paths)["rows"]
    return summary
