"""The stages of a job, each operating on a run folder so that each can also run alone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deepfleet.config import JobConfig
from deepfleet.context import RunContext, run_context
from deepfleet.data import (
    Manifest,
    ShardStream,
    StreamLoader,
    cache_settings,
    model_preprocessing,
    normalization,
    open_prepared,
    prepare_from_config,
    train_transform,
)
from deepfleet.deploy import (
    LoadedBundle,
    export_bundle,
    load_bundle,
    predict_dataset,
    sign_bundle,
)
from deepfleet.devices import set_cpu_threads
from deepfleet.errors import UserError
from deepfleet.models import build_model
from deepfleet.parallel import (
    DistEnv,
    LaunchOptions,
    detect_env,
    launch,
    must_launch,
    preflight,
    process_group,
)
from deepfleet.runs import RunPaths, create_run
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

if TYPE_CHECKING:
    from deepfleet.train._log import RecordLogger


def stage_prepare(paths: RunPaths, job: JobConfig) -> Manifest:
    """Shards for the run: a prepared data set is referenced (and verified), else written."""
    if job.data.prepared:
        # Its shards are checked as they are read (remote ones as they reach the cache).
        manifest = open_prepared(job.data.prepared, job.data)
        paths.link_data(manifest.root)
        return manifest
    # The writer took every digest from the bytes it wrote: nothing to hash again here.
    return prepare_from_config(job.data, paths.shards, job.run.seed, job.task)


def _model_for(ctx: RunContext) -> torch.nn.Module:
    return build_model(ctx.job.model, ctx.manifest.sample_shape, ctx.task.output_size())


def _sample(ctx: RunContext) -> torch.Tensor:
    """Two zero samples of the data's shape and type."""
    dtype = torch.int64 if ctx.manifest.preprocessing.tokens else torch.float32
    return torch.zeros((2, *ctx.manifest.sample_shape), dtype=dtype)


def check_model_output(ctx: RunContext, model: torch.nn.Module) -> None:
    """Run two samples through the model and check its output against the task, before any
    worker starts: a mismatch is one line naming both, never a failure mid-training."""
    name, manifest = ctx.job.model.name, ctx.manifest
    prep = manifest.preprocessing
    sample = _sample(ctx)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(sample)
    except (RuntimeError, ValueError, TypeError, IndexError) as err:
        raise UserError(
            f"model {name} cannot take the data's samples ({prep.input_dtype} of shape "
            f"{list(manifest.sample_shape)}): {str(err).splitlines()[0]}"
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(output, torch.Tensor):
        raise UserError(f"model {name} returns {type(output).__name__}, not a tensor")
    problem = ctx.task.check(tuple(output.shape))
    if problem:
        raise UserError(f"{problem} (model {name})")


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
    ctx = run_context(paths, env)
    with process_group(env, ctx.device):
        seed_everything(job.run.seed, job.run.deterministic)
        model = _model_for(ctx)  # the same initial weights on every rank
        check_model_output(ctx, model)
        if env.world_size > 1:  # but each rank its own dropout masks
            torch.manual_seed(job.run.seed + env.rank)
        ctx = ctx.with_topology(model)
        train = _train_stream(ctx)
        val = (
            split_loader(ctx, "val", env.rank, env.world_size)
            if "val" in ctx.manifest.splits
            else None
        )
        log = MetricsLog(
            paths.metrics if env.is_main else None,
            _track_loggers(job, paths) if env.is_main else (),
        )
        try:
            trainer = Trainer(
                job.train,
                model,
                ctx.device,
                seed=job.run.seed,
                task=ctx.task,
                env=env,
                topology=ctx.topology,
                log=log,
                progress=progress,
                checkpoint_dir=paths.checkpoints,
                resume=resume or env.restart_count > 0,
            )
            return trainer.fit(train, val)
        finally:
            log.close()


def _track_loggers(job: JobConfig, paths: RunPaths) -> list[RecordLogger]:
    """The [track] loggers, fed by MetricsLog after each metrics.jsonl line."""
    if not job.track.loggers:
        return []
    from deepfleet.track._loggers import open_loggers

    return open_loggers(job.track.loggers, paths.root)


def split_loader(
    ctx: RunContext,
    split: str,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int | None = None,
) -> StreamLoader:
    """A split read in order, in batches, rank `rank` taking its part (the last part padded
    from the start, so every rank runs as many batches): validation and evaluation."""
    batch_size = batch_size or ctx.job.train.eval_batch_size
    stream = ShardStream(
        ctx.manifest,
        split,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        shuffle=False,
        uneven="pad",
        shuffle_buffer=batch_size,
        key=ctx.data_key,
        normalize=normalization(ctx.job.data.augment),
    )
    return StreamLoader(stream)


def _train_stream(ctx: RunContext) -> StreamLoader:
    """This rank's share of the training shards. Ranks of one pipeline read the same
    batches, so the stream is cut by data-parallel rank, not by global rank."""
    job, topology = ctx.job, ctx.topology
    assert topology is not None
    data = job.data
    stream = ShardStream(
        ctx.manifest,
        "train",
        batch_size=job.train.batch_size,
        seed=job.run.seed,
        rank=topology.dp_rank(ctx.env.rank),
        world_size=topology.dp,
        uneven=data.uneven,
        shuffle_buffer=data.shuffle_buffer,
        cache=data.cache,
        key=ctx.data_key,
        # Each optimizer step's samples independent of the world size: resumable on another.
        order="global",
        accumulation=job.train.accumulation_steps,
        transform=train_transform(ctx.manifest, data.augment, job.run.seed),
        normalize=normalization(data.augment),
    )
    pin = ctx.device.type == "cuda"
    return StreamLoader(stream, num_workers=job.train.num_workers, pin_memory=pin)


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
        ctx = run_context(paths, DistEnv())  # the launching process, before any worker
        model = _model_for(ctx)
        check_model_output(ctx, model)
        preflight(job.train, model, options.world_size, example=_sample(ctx))
        launch(paths.root, options, resume=resume)
        paths.refresh(f"checkpoints/{STATE}", paths.metrics.name)  # rank 0 may be elsewhere
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


def _trained_model(ctx: RunContext) -> torch.nn.Module:
    paths = ctx.paths
    _check_not_failed(paths)
    name = BEST if ctx.job.export.checkpoint == "best" else LAST
    weights = paths.checkpoints / name
    if not weights.is_file():
        raise UserError(f"{paths.root}: no {name} checkpoint; run `deepfleet train` first")
    return load_weights(_model_for(ctx), weights)


def stage_evaluate(paths: RunPaths) -> dict[str, Any]:
    """The task's metrics over the evaluation split, read in batches (memory bounded by a
    batch), and the report."""
    from deepfleet.evaluate import evaluator_for, write_report

    job = paths.load_job()
    set_cpu_threads(job.run.threads)
    ctx = run_context(paths, DistEnv())  # one process reads the whole split
    model = _trained_model(ctx).to(ctx.device)
    split = job.evaluate.split
    evaluator = evaluator_for(ctx.task)
    loader = split_loader(ctx, split, batch_size=job.evaluate.batch_size)
    started = time.perf_counter()
    run_split(model, split_batches(loader), [evaluator], ctx.device)
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
        samples_text=continuations(ctx, model) if ctx.manifest.tokens else None,
    )
    if "tensorboard" in job.track.loggers:
        from deepfleet.track._loggers import log_report_images

        log_report_images(paths.root, paths.report)
    return metrics


def continuations(ctx: RunContext, model: torch.nn.Module) -> list[dict]:
    """A few prompts from the evaluation split and the model's greedy continuations, for
    the report (a language model's quality read by eye)."""
    from deepfleet.data import load_tokenizer
    from deepfleet.deploy import generate

    tokenizer = load_tokenizer(ctx.manifest.file_bytes("tokenizer.json"))
    x, _ = next(iter(split_loader(ctx, ctx.job.evaluate.split, batch_size=3)))
    context = ctx.manifest.sample_shape[0]
    found = []
    for row in x[:3]:
        prompt = row[: max(1, context // 4)].tolist()
        new = list(generate(model, prompt, 32, 0.0, 0, ctx.job.run.seed, context))
        found.append({"prompt": tokenizer.decode(prompt), "continuation": tokenizer.decode(new)})
    return found


def stage_export(paths: RunPaths) -> Path:
    ctx = run_context(paths, DistEnv())  # export reads no shard: none is hashed
    job, manifest = ctx.job, ctx.manifest
    model = _trained_model(ctx)
    extra = {"job.toml": paths.job_file}
    if (paths.report / "metrics.json").is_file():
        extra["metrics.json"] = paths.report / "metrics.json"
    if "tokenizer.json" in manifest.raw.get("files", {}):
        # Checked against the manifest (a remote data set's through the node's cache).
        extra["tokenizer.json"] = manifest.file_path("tokenizer.json")
    bundle = export_bundle(
        model,
        paths.bundle,
        name=job.run.name,
        model_section=job.model,
        input_shape=manifest.sample_shape,
        class_names=manifest.targets.names,
        task=ctx.task,
        task_factory=job.task,
        extra_files=extra,
        extra_spec={"data_manifest_sha256": manifest.digest()},
        onnx=job.export.onnx,
        preprocessing=model_preprocessing(manifest, job.data.augment),
    )
    if job.export.signing_key:
        sign_bundle(bundle, job.export.signing_key)
    _register_in_mlflow(paths, job, bundle)
    return bundle


def _register_in_mlflow(paths: RunPaths, job: JobConfig, bundle: Path) -> None:
    """[track.mlflow] register_model: the report and the bundle as artifacts of the run's
    MLflow run, and the bundle as a new version of the registered model."""
    if not job.track.mlflow.register_model:
        return
    from deepfleet.track._mlflow import register_bundle

    register_bundle(paths.root, job, paths.report, bundle)


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
        storage_options=job.data.storage_options,
        cache=cache_settings(job.data),
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
