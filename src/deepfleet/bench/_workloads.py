"""What a benchmark runs: a model, batches for it, a loss and an optimizer.

Synthetic workloads draw random inputs (the speed of a model does not depend on the pixel
values); a job workload uses the job's model, optimizer, task (its output size and loss) and
real prepared training split.
A workload is described by a small JSON-able spec so that worker processes can rebuild it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deepfleet.config import ModelSection, PhaseSection, TrainSection, load_job
from deepfleet.errors import UserError
from deepfleet.models import build_model
from deepfleet.tasks import CausalLMTask, ClassificationTask, Task
from deepfleet.train import build_optimizer

Batch = tuple[Tensor, Tensor]

# A synthetic workload's one phase (its optimizer and schedule); a job brings its own.
BENCH_PHASE = PhaseSection(name="bench", lr=1e-4, weight_decay=0.01)


@dataclass
class Workload:
    """One benchmarkable training and inference set-up."""

    name: str
    description: str
    model: ModelSection
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    spec: dict[str, Any]
    # The task owns the training loss (the Trainer's objective); default: classification.
    task: Task = field(default_factory=ClassificationTask)
    tokens_per_sample: int = 1  # > 1 for the decoder: throughput is then also in tokens/s
    precision: str = "fp32"
    # The [train] table the Trainer runs with: a job's own; None for a synthetic workload
    # (the defaults of `deepfleet train`, AdamW at lr 1e-4).
    train: TrainSection | None = None
    real_data: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    token_inputs: bool = False  # inputs are token ids below num_classes, whatever their length

    @property
    def is_tokens(self) -> bool:
        return self.token_inputs or self.tokens_per_sample > 1

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def build(self) -> nn.Module:
        return build_model(self.model, self.input_shape, self.num_classes)

    def train_section(self) -> TrainSection:
        """The job's [train] table, or `deepfleet train`'s defaults with BENCH_PHASE."""
        return self.train or TrainSection(phases=[BENCH_PHASE])

    def optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """The first phase's optimizer over `model`'s trainable parameters."""
        return build_optimizer(self.train_section().phases[0], model)

    def loss_fn(self, output: Tensor, target: Tensor) -> Tensor:
        """The task's loss as a mean over the batch's terms (samples, tokens, outputs)."""
        return self.task.loss(output, target) / self.task.count(target)

    def random_batch(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Random inputs of the workload's shape (host memory)."""
        if self.is_tokens:
            shape = (batch_size, *self.input_shape)
            x = torch.randint(0, self.num_classes, shape, generator=generator)
            return x, torch.randint(0, self.num_classes, shape, generator=generator)
        x = torch.randn(batch_size, *self.input_shape, generator=generator)
        return x, torch.randint(0, self.num_classes, (batch_size,), generator=generator)

    def batches(
        self,
        batch_size: int,
        seed: int = 0,
        pool: int = 8,
        prepare: Callable[[Batch], Batch] | None = None,
    ) -> Iterator[Batch]:
        """Batches forever: shuffled real data for a job, else a cycled pool of random ones.

        `prepare` is applied to each real batch as it is drawn, and once to each pooled batch
        (pinning host memory, or placing the pool on the device, then costs nothing per step).
        """
        prepare = prepare or (lambda batch: batch)
        generator = torch.Generator().manual_seed(seed)
        if self.real_data is not None:
            x, y = self.real_data
            while True:
                order = torch.randperm(len(y), generator=generator)
                for start in range(0, len(y) - batch_size + 1, batch_size):
                    index = order[start : start + batch_size]
                    yield prepare((x[index], y[index]))
        made = [prepare(self.random_batch(batch_size, generator)) for _ in range(pool)]
        while True:
            yield from made


def _synthetic(
    name: str,
    description: str,
    model: str,
    params: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    batch_size: int,
    **extra: Any,
) -> Callable[[], Workload]:
    # Built when asked for, so each workload gets its own task object.
    def make() -> Workload:
        return Workload(
            name=name,
            description=description,
            model=ModelSection(name=model, params=params),
            input_shape=input_shape,
            num_classes=num_classes,
            batch_size=batch_size,
            spec={"kind": "synthetic", "name": name},
            **extra,
        )

    return make


SYNTHETIC: dict[str, Callable[[], Workload]] = {
    "mlp": _synthetic(
        "mlp",
        "MLP 784-1024-1024-10 on random 28x28 inputs",
        "mlp",
        {"hidden": [1024, 1024], "dropout": 0.0},
        (1, 28, 28),
        10,
        256,
    ),
    "cnn": _synthetic("cnn", "zoo CNN on random 3x32x32 images", "cnn", {}, (3, 32, 32), 10, 128),
    "resnet18-32": _synthetic(
        "resnet18-32",
        "ResNet-18 (CIFAR stem) on random 3x32x32 images",
        "resnet18",
        {"stem": "cifar"},
        (3, 32, 32),
        10,
        128,
    ),
    "resnet18-224": _synthetic(
        "resnet18-224",
        "ResNet-18 on random 3x224x224 images",
        "resnet18",
        {},
        (3, 224, 224),
        1000,
        64,
    ),
    "resnet50-32": _synthetic(
        "resnet50-32",
        "ResNet-50 (CIFAR stem) on random 3x32x32 images",
        "resnet50",
        {"stem": "cifar"},
        (3, 32, 32),
        10,
        128,
    ),
    "resnet50-224": _synthetic(
        "resnet50-224",
        "ResNet-50 on random 3x224x224 images",
        "resnet50",
        {},
        (3, 224, 224),
        1000,
        64,
    ),
    "gpt": _synthetic(
        "gpt",
        "GPT-style decoder, 4 layers, dim 256, context 128, vocab 4096",
        "gpt",
        {"dim": 256, "layers": 4, "heads": 4},
        (128,),
        4096,
        16,
        task=CausalLMTask(),
        tokens_per_sample=128,
    ),
    "gpt-large": _synthetic(
        "gpt-large",
        "GPT-style decoder, 24 layers, dim 1024, context "
        "1024, vocab 50304 (about 350 M parameters; for GPUs)",
        "gpt",
        {"dim": 1024, "layers": 24, "heads": 16},
        (1024,),
        50304,
        8,
        task=CausalLMTask(),
        tokens_per_sample=1024,
    ),
}


def synthetic_workload(name: str) -> Workload:
    if name not in SYNTHETIC:
        raise UserError(
            f"--workload: unknown workload {name!r} (choose from {', '.join(SYNTHETIC)})"
        )
    return SYNTHETIC[name]()


def job_workload(job_file: str | Path, data_dir: str | Path) -> Workload:
    """The job's model, task and first-phase optimizer over its prepared, verified training
    split. The task sizes the model's output and gives the loss: its sum over the batch's
    terms (samples, tokens, outputs) divided by their count, the mean the training loop
    takes its gradients of."""
    # Imported here: synthetic workloads (and scaling workers) need neither.
    from deepfleet.context import task_for
    from deepfleet.data import read_manifest, read_split

    job = load_job(job_file)
    manifest = read_manifest(data_dir)
    task = task_for(job, manifest)  # one line when the data set does not fit the task
    train = read_split(manifest, "train")  # each shard checked as it is read
    shape = tuple(manifest.sample_shape)
    if len(train) < job.train.batch_size:
        raise UserError(
            f"train.batch_size {job.train.batch_size} is larger than the training "
            f"split ({len(train)} samples)"
        )

    tokens = manifest.tokens
    samples = f"sequences of {shape[0]} tokens" if tokens else f"{math.prod(shape)}-value samples"
    return Workload(
        name=f"job:{job.run.name}",
        description=f"job {job.run.name}: task {task.name}, model {job.model.name} on "
        f"{samples} of {job.data.source}, {len(train)} training samples",
        model=job.model,
        input_shape=shape,
        num_classes=task.output_size(),
        batch_size=job.train.batch_size,
        spec={"kind": "job", "job_file": str(job_file), "data_dir": str(data_dir)},
        task=task,
        tokens_per_sample=shape[0] if tokens else 1,
        precision=job.train.precision,
        train=job.train,
        real_data=(train.x, train.y),
        token_inputs=tokens,
    )


def load_workload(spec: dict[str, Any]) -> Workload:
    """Rebuild a workload from its spec (how worker processes get theirs)."""
    if spec.get("kind") == "synthetic":
        return synthetic_workload(spec["name"])
    if spec.get("kind") == "job":
        return job_workload(spec["job_file"], spec["data_dir"])
    raise UserError(f"unknown workload spec {spec!r}")
