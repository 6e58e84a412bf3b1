"""The evaluation of each task over a split, fed a batch at a time: every state is a fixed
size (counts, sums, a binned curve, a bounded sample of points), so memory is bounded by a
batch, never by the split. States are torchmetrics metrics, reduced over ranks when a process
group is up; the regression's plotted points are a sample of this process's rows.

    evaluator = evaluator_for(task)
    for output, target in batches:  # fp32 model outputs, targets as stored
        evaluator.update(output, target)
    metrics = evaluator.compute()  # JSON-able, with "task" and "samples"
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torchmetrics import Metric, MetricCollection

from deepfleet.evaluate._metrics import confusion_counts, metrics_from_confusion
from deepfleet.tasks import (
    CausalLMTask,
    ClassificationTask,
    MultilabelTask,
    RegressionTask,
    Task,
    counting,
)
from deepfleet.tasks._multilabel import THRESHOLD

MAP_THRESHOLDS = 1001  # probability grid of the binned precision-recall curves behind mAP
POINTS = 2000  # at most this many (true, predicted) rows kept for the regression's plot
PLOTTED_OUTPUTS = 4  # the regression plot shows the first outputs only


@runtime_checkable
class Evaluator(Protocol):
    """A task's evaluation over one split."""

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None: ...

    def compute(self) -> dict[str, Any]: ...


class Sums(Metric):
    """Named tensors summed over batches (and ranks)."""

    full_state_update = False

    def __init__(self, **states: tuple[tuple[int, ...], torch.dtype]) -> None:
        super().__init__()
        self._shapes = {name: shape for name, (shape, _) in states.items()}
        for name, (shape, dtype) in states.items():
            self.add_state(name, torch.zeros(shape, dtype=dtype), dist_reduce_fx="sum")

    def update(self, **values: torch.Tensor) -> None:  # type: ignore[override]
        for name, value in values.items():
            state = getattr(self, name)
            setattr(self, name, state + value.detach().to(state.device, state.dtype))

    def compute(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self._shapes}

    def totals(self) -> dict[str, torch.Tensor]:
        """compute() (reduced over ranks), each in its declared shape (torchmetrics squeezes
        one-element results) and on the CPU."""
        computed = _computed(self)
        return {k: computed[k].detach().cpu().reshape(s) for k, s in self._shapes.items()}


def _computed(metric: Metric) -> Any:
    """metric.compute(), quiet when this rank saw no batch (it still joins the reduction)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
        return metric.compute()


def _state_bytes(obj: Any, depth: int = 0) -> int:
    """Bytes held by the tensors of the metric states reachable from `obj`."""
    if depth > 4:
        return 0
    if isinstance(obj, Metric):
        total = 0
        for value in obj.metric_state.values():
            items = value if isinstance(value, list) else [value]
            total += sum(t.nbytes for t in items if isinstance(t, torch.Tensor))
        return total
    if isinstance(obj, MetricCollection):
        return sum(_state_bytes(m, depth + 1) for m in obj.values())
    if isinstance(obj, dict):
        return sum(_state_bytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_state_bytes(v, depth + 1) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if hasattr(obj, "__dict__") and not isinstance(obj, torch.nn.Module | type):
        return sum(_state_bytes(v, depth + 1) for v in vars(obj).values())
    return 0


class _Base:
    """Moves the metric states to the outputs' device (NCCL reduces CUDA tensors)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._device: torch.device | None = None

    def _metrics(self) -> list[Metric]:
        return [v for v in vars(self).values() if isinstance(v, Metric)]

    def _follow(self, output: torch.Tensor) -> None:
        if self._device != output.device:
            self._device = output.device
            for metric in self._metrics():
                metric.to(output.device)

    def state_bytes(self) -> int:
        """Bytes held by the evaluator's states: constant in the number of batches."""
        return sum(_state_bytes(v) for k, v in vars(self).items() if k != "task")

    def _head(self, samples: int) -> dict[str, Any]:
        return {"task": self.task.name, "samples": samples}


class ClassificationEvaluator(_Base):
    """A streamed confusion matrix plus the mean cross-entropy."""

    def __init__(self, task: ClassificationTask) -> None:
        super().__init__(task)
        self.classes = task.output_size()
        self.sums = Sums(
            confusion=((self.classes, self.classes), torch.int64),
            loss=((), torch.float64),
        )

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._follow(output)
        output = output.float()
        self.sums.update(
            confusion=confusion_counts(target, output.argmax(1), self.classes),
            loss=self.task.loss(output, target.long()),
        )

    def compute(self) -> dict[str, Any]:
        sums = self.sums.totals()
        figures = metrics_from_confusion(sums["confusion"], self.task.targets.names or None)
        samples = figures.pop("samples")
        return {**self._head(samples), "loss": float(sums["loss"]) / max(samples, 1), **figures}


class MultilabelEvaluator(_Base):
    """Per-label counts at the task's threshold, the mean binary cross-entropy per label, and
    binned precision-recall curves for the average precision."""

    def __init__(self, task: MultilabelTask, thresholds: int = MAP_THRESHOLDS) -> None:
        from torchmetrics.classification import MultilabelAveragePrecision

        super().__init__(task)
        self.labels = task.output_size()
        self.thresholds = thresholds
        vector = ((self.labels,), torch.int64)
        self.sums = Sums(
            tp=vector,
            fp=vector,
            fn=vector,
            support=vector,
            samples=((), torch.int64),
            loss=((), torch.float64),
        )
        self.average_precision = MultilabelAveragePrecision(
            self.labels, average=None, thresholds=thresholds
        )

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._follow(output)
        output = output.float()
        truth = target.long()
        probs = torch.sigmoid(output)
        predicted = (probs >= THRESHOLD).long()
        self.sums.update(
            tp=(predicted * truth).sum(0),
            fp=(predicted * (1 - truth)).sum(0),
            fn=((1 - predicted) * truth).sum(0),
            support=truth.sum(0),
            samples=torch.tensor(len(target)),
            loss=self.task.loss(output, target),
        )
        with counting():  # see deepfleet.tasks counting: bincounts in any mode
            self.average_precision.update(probs, truth)

    def compute(self) -> dict[str, Any]:
        sums = self.sums.totals()
        ap = _computed(self.average_precision).detach().double().cpu().reshape(-1)
        tp, fp, fn, support = (sums[k].double() for k in ("tp", "fp", "fn", "support"))
        samples = int(sums["samples"])

        def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
            return torch.where(den > 0, num / den.clamp(min=1), torch.zeros_like(num))

        precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
        f1 = ratio(2 * tp, 2 * tp + fp + fn)
        micro = {k: v.sum() for k, v in (("tp", tp), ("fp", fp), ("fn", fn))}
        positive = support > 0  # average precision is defined for labels with positives
        names = self.task.targets.names or [str(i) for i in range(self.labels)]
        return {
            **self._head(samples),
            "loss": float(sums["loss"]) / max(samples * self.labels, 1),
            "threshold": THRESHOLD,
            "precision_micro": float(ratio(micro["tp"], micro["tp"] + micro["fp"])),
            "recall_micro": float(ratio(micro["tp"], micro["tp"] + micro["fn"])),
            "f1_micro": float(ratio(2 * micro["tp"], 2 * micro["tp"] + micro["fp"] + micro["fn"])),
            "precision_macro": float(precision.mean()),
            "recall_macro": float(recall.mean()),
            "f1_macro": float(f1.mean()),
            "map": float(ap[positive].mean()) if bool(positive.any()) else 0.0,
            "map_thresholds": self.thresholds,
            "per_label": [
                {
                    "label": names[i],
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "ap": float(ap[i]) if bool(positive[i]) else None,
                    "support": int(sums["support"][i]),
                }
                for i in range(self.labels)
            ],
            "label_names": list(names),
        }


class Reservoir:
    """A uniform sample of at most `size` rows of a stream (reservoir sampling, seeded)."""

    def __init__(self, size: int = POINTS, seed: int = 0) -> None:
        self.size = size
        self.seen = 0
        self.true: np.ndarray | None = None
        self.predicted: np.ndarray | None = None
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return min(self.seen, self.size)

    def add(self, true: torch.Tensor, predicted: torch.Tensor) -> None:
        """Offer a batch of rows ([batch, k] each); only the kept rows leave the device."""
        rows = len(true)
        if self.true is None:
            width = true.shape[1]
            self.true = np.zeros((self.size, width), np.float32)
            self.predicted = np.zeros((self.size, width), np.float32)
        fill = max(0, min(rows, self.size - self.seen))
        batch_rows = list(range(fill))
        slots = list(range(self.seen, self.seen + fill))
        if rows > fill:
            index = np.arange(fill, rows)
            # row at stream position j replaces a uniform slot in 0..j when that is < size
            draws = self._rng.integers(0, self.seen + index + 1)
            kept = draws < self.size
            # several rows of one batch may draw the same slot: the latest one stays
            chosen_slots, last = np.unique(draws[kept][::-1], return_index=True)
            batch_rows += index[kept][::-1][last].tolist()
            slots += chosen_slots.tolist()
        self.seen += rows
        if batch_rows:
            pick = torch.tensor(batch_rows, device=true.device)
            self.true[slots] = true[pick].float().cpu().numpy()
            self.predicted[slots] = predicted[pick].float().cpu().numpy()

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        count = len(self)
        if self.true is None:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return self.true[:count], self.predicted[:count]


class RegressionEvaluator(_Base):
    """Per-output sums of squared and absolute errors and of the targets' first two moments
    (about the training mean, so the total sum of squares keeps its precision)."""

    def __init__(self, task: RegressionTask, points: int = POINTS, seed: int = 0) -> None:
        super().__init__(task)
        self.outputs = task.output_size()
        self.center = torch.tensor(task.targets.stats["mean"], dtype=torch.float64)
        vector = ((self.outputs,), torch.float64)
        self.sums = Sums(
            squared=vector,
            absolute=vector,
            shifted=vector,
            shifted_squared=vector,
            samples=((), torch.int64),
            loss=((), torch.float64),
            terms=((), torch.int64),
        )
        self.reservoir = Reservoir(points, seed)

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._follow(output)
        rows = len(target)
        output = output.float().reshape(rows, -1)
        target = target.float().reshape(rows, -1)
        values = self.task.values(output)
        error = values.double() - target.double()
        shifted = target.double() - self.center.to(target.device)
        self.sums.update(
            squared=(error**2).sum(0),
            absolute=error.abs().sum(0),
            shifted=shifted.sum(0),
            shifted_squared=(shifted**2).sum(0),
            samples=torch.tensor(rows),
            loss=self.task.loss(output, target),
            terms=torch.tensor(self.task.count(target)),
        )
        plotted = min(self.outputs, PLOTTED_OUTPUTS)
        self.reservoir.add(target[:, :plotted], values[:, :plotted])

    def compute(self) -> dict[str, Any]:
        sums = self.sums.totals()
        samples = int(sums["samples"])
        n = max(samples, 1)
        mse = sums["squared"] / n
        mae = sums["absolute"] / n
        total = (sums["shifted_squared"] - sums["shifted"] ** 2 / n).clamp(min=0)
        # scikit-learn's r2_score: 1 - residual / total; a constant target gives 1 when
        # predicted exactly, else 0
        r2 = torch.where(
            total > 0,
            1 - sums["squared"] / total.clamp(min=1e-300),
            torch.where(sums["squared"] == 0, 1.0, 0.0).double(),
        )
        per_output = {"mse": mse, "rmse": mse.sqrt(), "mae": mae, "r2": r2}
        names = self.task.targets.names or [str(i) for i in range(self.outputs)]
        true, predicted = self.reservoir.points()
        return {
            **self._head(samples),
            "loss": float(sums["loss"]) / max(int(sums["terms"]), 1),
            **{k: float(v.mean()) for k, v in per_output.items()},
            "per_output": [
                {"output": names[i], **{k: float(v[i]) for k, v in per_output.items()}}
                for i in range(self.outputs)
            ],
            "output_names": list(names),
            "points": {
                "outputs": list(names[: true.shape[1]]),
                "true": true.tolist(),
                "predicted": predicted.tolist(),
            },
        }


class CausalLMEvaluator(_Base):
    """The mean cross-entropy per target token and its perplexity."""

    def __init__(self, task: CausalLMTask) -> None:
        super().__init__(task)
        self.sums = Sums(
            loss=((), torch.float64), tokens=((), torch.int64), samples=((), torch.int64)
        )

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._follow(output)
        self.sums.update(
            loss=self.task.loss(output.float(), target),
            tokens=torch.tensor(self.task.count(target)),
            samples=torch.tensor(len(target)),
        )

    def compute(self) -> dict[str, Any]:
        sums = self.sums.totals()
        tokens = int(sums["tokens"])
        loss = float(sums["loss"]) / max(tokens, 1)
        return {
            **self._head(int(sums["samples"])),
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "tokens": tokens,
        }


class TaskMetricsEvaluator(_Base):
    """Any other task: its own streaming metrics."""

    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.meters = task.metrics()
        self.sums = Sums(samples=((), torch.int64))

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:
        self._follow(output)
        self.meters.update(output.float(), target)
        self.sums.update(samples=torch.tensor(len(target)))

    def compute(self) -> dict[str, Any]:
        samples = int(self.sums.totals()["samples"])
        figures = {k: _plain(v) for k, v in self.meters.compute().items()}
        return {**figures, **self._head(samples)}


def _plain(value: Any) -> Any:
    """A JSON-able form of a metric value."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def evaluator_for(task: Task, *, points: int = POINTS, seed: int = 0) -> Evaluator:
    """The evaluation of `task` (bound to its data set's targets). `points` and `seed` set the
    regression's sample of (true, predicted) rows kept for its plot."""
    if isinstance(task, ClassificationTask):
        return ClassificationEvaluator(task)
    if isinstance(task, MultilabelTask):
        return MultilabelEvaluator(task)
    if isinstance(task, RegressionTask):
        return RegressionEvaluator(task, points, seed)
    if isinstance(task, CausalLMTask):
        return CausalLMEvaluator(task)
    return TaskMetricsEvaluator(task)
