"""Each task's streamed evaluation against scikit-learn over the whole split, its bounded
state, and the report it renders."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch.nn import functional as F

from deepfleet.evaluate import (
    HEADLINE,
    classification_metrics,
    evaluator_for,
    headline,
    markdown_report,
    write_report,
)
from deepfleet.evaluate._tasks import Reservoir
from deepfleet.tasks import Targets, build_task
from deepfleet.tasks._meters import StreamMetrics

PNG = b"\x89PNG\r\n\x1a\n"
SIZES = [1, 17, 64, 3, 50, 33, 8]  # uneven batches, one of a single row


def _classification(classes=5):
    names = [f"c{i}" for i in range(classes)]
    return build_task("classification", Targets("int64", (), names))


def _multilabel(labels=6):
    return build_task("multilabel", Targets("uint8", (labels,), [f"l{i}" for i in range(labels)]))


def _regression(mean=(10.0, -3.0, 250.0), std=(2.0, 0.5, 40.0)):
    stats = {"mean": list(mean), "std": list(std)}
    names = [f"y{i}" for i in range(len(mean))]
    return build_task("regression", Targets("float32", (len(mean),), names, stats))


def _causal_lm(length=8, vocab=11):
    return build_task("causal_lm", Targets("int32", (length,), [], {"vocab_size": vocab}))


def _classification_batches(rng, classes=5, sizes=SIZES):
    for size in sizes:
        target = rng.integers(0, classes, size)
        logits = rng.normal(size=(size, classes)).astype(np.float32)
        logits[np.arange(size), target] += 1.5 * (rng.random(size) < 0.6)  # mostly right
        logits[:, classes - 1] -= 5  # the last class is (almost) never predicted
        yield torch.from_numpy(logits), torch.from_numpy(target)


def _multilabel_batches(rng, labels=6, sizes=SIZES, empty_label=None):
    for size in sizes:
        target = (rng.random((size, labels)) < 0.35).astype(np.uint8)
        if empty_label is not None:
            target[:, empty_label] = 0
        logits = rng.normal(size=(size, labels)) + 1.2 * (2 * target.astype(np.float64) - 1)
        yield torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(target)


def _regression_batches(rng, task, sizes=SIZES):
    mean, std = (np.array(task.targets.stats[k]) for k in ("mean", "std"))
    for size in sizes:
        truth = (mean + std * rng.normal(size=(size, len(mean)))).astype(np.float32)
        predicted = truth + std * rng.normal(scale=0.4, size=truth.shape)
        output = ((predicted - mean) / std).astype(np.float32)  # standardised units
        yield torch.from_numpy(output), torch.from_numpy(truth)


def _causal_lm_batches(rng, length=8, vocab=11, sizes=(3, 5, 1, 4)):
    for size in sizes:
        target = rng.integers(0, vocab, (size, length)).astype(np.int32)
        logits = rng.normal(size=(size, length, vocab)).astype(np.float32)
        yield torch.from_numpy(logits), torch.from_numpy(target)


def _run(task, batches, **kw):
    evaluator = evaluator_for(task, **kw)
    outputs, targets = [], []
    for output, target in batches:
        evaluator.update(output, target)
        outputs.append(output)
        targets.append(target)
    metrics = evaluator.compute()
    json.dumps(metrics, allow_nan=False)  # JSON-able, no NaN
    return metrics, torch.cat(outputs), torch.cat(targets)


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_matches_scikit_learn(seed):
    task, classes = _classification(), 5
    got, output, target = _run(task, _classification_batches(np.random.default_rng(seed)))
    y_true, y_pred = target.numpy(), output.argmax(1).numpy()
    assert got["task"] == "classification"
    assert got["samples"] == len(y_true) == sum(SIZES)
    assert got["loss"] == pytest.approx(F.cross_entropy(output, target).item(), rel=1e-6)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    labels = range(classes)
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=avg, labels=labels, zero_division=0
        )
        assert got[f"precision_{avg}"] == pytest.approx(p, abs=1e-9)
        assert got[f"recall_{avg}"] == pytest.approx(r, abs=1e-9)
        assert got[f"f1_{avg}"] == pytest.approx(f, abs=1e-9)
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, average=None, labels=labels, zero_division=0
    )
    for i, row in enumerate(got["per_class"]):
        assert row["class"] == f"c{i}"
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert row["support"] == support[i]
    expected = skm.confusion_matrix(y_true, y_pred, labels=labels)
    assert np.array_equal(np.array(got["confusion_matrix"]), expected)
    # the whole-tensor function reads the same counts
    whole = classification_metrics(target, output.argmax(1), classes, got["class_names"])
    assert whole == {k: v for k, v in got.items() if k not in ("task", "loss")}


def test_classification_macro_counts_absent_classes_as_zero():
    y_true, y_pred = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 1, 1])
    got = classification_metrics(y_true, y_pred, 3)
    want = skm.f1_score(y_true, y_pred, average="macro", labels=[0, 1, 2], zero_division=0)
    assert got["f1_macro"] == pytest.approx(want)
    with pytest.raises(ValueError, match="0..2"):
        classification_metrics(torch.tensor([3]), torch.tensor([0]), 3)


@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_matches_scikit_learn(seed):
    task = _multilabel()
    got, output, target = _run(task, _multilabel_batches(np.random.default_rng(seed)))
    probs = torch.sigmoid(output).numpy()
    y_true, y_pred = target.numpy().astype(int), (probs >= 0.5).astype(int)
    assert got["task"] == "multilabel" and got["samples"] == sum(SIZES)
    bce = F.binary_cross_entropy_with_logits(output, target.float()).item()
    assert got["loss"] == pytest.approx(bce, rel=1e-6)
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    for i, row in enumerate(got["per_label"]):
        assert row["label"] == f"l{i}"
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert row["support"] == support[i]
    for avg in ("micro", "macro"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=avg, zero_division=0
        )
        assert (got[f"precision_{avg}"], got[f"recall_{avg}"]) == pytest.approx((p, r))
        assert got[f"f1_{avg}"] == pytest.approx(skm.f1_score(y_true, y_pred, average=avg))
        assert got[f"f1_{avg}"] == pytest.approx(f)
    want = skm.average_precision_score(y_true, probs, average="macro")
    assert got["map"] == pytest.approx(want, abs=1e-2)
    per_label = skm.average_precision_score(y_true, probs, average=None)
    for row, ap in zip(got["per_label"], per_label, strict=True):
        assert row["ap"] == pytest.approx(ap, abs=1e-2)


def test_multilabel_map_skips_labels_without_positives():
    task = _multilabel()
    rng = np.random.default_rng(3)
    got, output, target = _run(task, _multilabel_batches(rng, empty_label=2))
    probs = torch.sigmoid(output).numpy()
    assert got["per_label"][2]["ap"] is None and got["per_label"][2]["support"] == 0
    keep = [i for i in range(6) if i != 2]
    want = skm.average_precision_score(target.numpy()[:, keep], probs[:, keep], average="macro")
    assert got["map"] == pytest.approx(want, abs=1e-2)


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_matches_scikit_learn(seed):
    task = _regression()
    got, output, target = _run(task, _regression_batches(np.random.default_rng(seed), task))
    y_true, y_pred = target.numpy(), task.values(output).numpy()
    assert got["task"] == "regression" and got["samples"] == sum(SIZES)
    standard = (target - torch.tensor(task.targets.stats["mean"])) / torch.tensor(
        task.targets.stats["std"]
    )
    assert got["loss"] == pytest.approx(F.mse_loss(output, standard).item(), rel=1e-5)
    mse = skm.mean_squared_error(y_true, y_pred, multioutput="raw_values")
    mae = skm.mean_absolute_error(y_true, y_pred, multioutput="raw_values")
    r2 = skm.r2_score(y_true, y_pred, multioutput="raw_values")
    for i, row in enumerate(got["per_output"]):
        assert row["output"] == f"y{i}"
        assert row["mse"] == pytest.approx(mse[i], rel=1e-6)
        assert row["rmse"] == pytest.approx(math.sqrt(mse[i]), rel=1e-6)
        assert row["mae"] == pytest.approx(mae[i], rel=1e-6)
        assert row["r2"] == pytest.approx(r2[i], rel=1e-6, abs=1e-9)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y_true, y_pred), rel=1e-6)
    assert got["rmse"] == pytest.approx(skm.root_mean_squared_error(y_true, y_pred), rel=1e-6)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y_true, y_pred), rel=1e-6)
    assert got["r2"] == pytest.approx(skm.r2_score(y_true, y_pred), rel=1e-6)
    points = got["points"]
    assert len(points["true"]) == len(points["predicted"]) == sum(SIZES)  # fewer than the cap
    assert points["outputs"] == ["y0", "y1", "y2"]


def test_regression_single_output_and_constant_target():
    task = _regression(mean=(5.0,), std=(1.0,))
    evaluator = evaluator_for(task)
    evaluator.update(torch.zeros(4, 1), torch.full((4, 1), 5.0))  # exact on a constant
    assert evaluator.compute()["r2"] == 1.0
    evaluator.update(torch.ones(4, 1), torch.full((4, 1), 5.0))
    got = evaluator.compute()
    y_true, y_pred = np.full(8, 5.0), np.r_[np.full(4, 5.0), np.full(4, 6.0)]
    assert got["r2"] == skm.r2_score(y_true, y_pred) == 0.0
    assert got["mse"] == pytest.approx(skm.mean_squared_error(y_true, y_pred))


def test_causal_lm_loss_and_perplexity():
    task = _causal_lm()
    got, output, target = _run(task, _causal_lm_batches(np.random.default_rng(0)))
    want = F.cross_entropy(output.flatten(0, 1), target.long().flatten()).item()
    assert got["task"] == "causal_lm"
    assert got["samples"] == 13 and got["tokens"] == 13 * 8
    assert got["loss"] == pytest.approx(want, rel=1e-6)
    assert got["perplexity"] == pytest.approx(math.exp(want), rel=1e-6)


class _MeanAbsTask:
    """A user's task: the mean absolute error of one output."""

    name = "mine"

    def __init__(self):
        self.targets = Targets("float32", (1,))

    def loss(self, output, target):
        return (output - target).abs().sum()

    def count(self, target):
        return target.numel()

    def metrics(self):
        return StreamMetrics(self.loss, self.count)


def test_other_task_uses_its_own_metrics():
    got, output, target = _run(
        _MeanAbsTask(), [(torch.full((3, 1), 1.0), torch.zeros(3, 1)), (torch.zeros(2, 1),) * 2]
    )
    assert got == {"task": "mine", "samples": 5, "loss": pytest.approx(3 / 5)}


def _task_and_batches(name, rng, batches):
    sizes = [32] * batches
    if name == "classification":
        return _classification(), _classification_batches(rng, sizes=sizes)
    if name == "multilabel":
        return _multilabel(), _multilabel_batches(rng, sizes=sizes)
    if name == "regression":
        task = _regression()
        return task, _regression_batches(rng, task, sizes=sizes)
    return _causal_lm(), _causal_lm_batches(rng, sizes=sizes)


@pytest.mark.parametrize("name", ["classification", "multilabel", "regression", "causal_lm"])
def test_state_is_bounded_by_a_batch(name):
    task, batches = _task_and_batches(name, np.random.default_rng(0), 50)
    evaluator = evaluator_for(task, points=100)
    sizes = []
    for output, target in batches:
        evaluator.update(output, target)
        sizes.append(evaluator.state_bytes())
    assert sizes[0] > 0
    assert len(set(sizes[1:])) == 1 and sizes[-1] <= sizes[0] + 1024  # constant after batch 1
    metrics = evaluator.compute()
    assert metrics["samples"] == 50 * 32
    if name == "regression":
        assert len(evaluator.reservoir) == 100
        assert len(metrics["points"]["true"]) == 100


def test_reservoir_is_uniform_and_seeded():
    def sample(seed):
        reservoir = Reservoir(size=500, seed=seed)
        stream = torch.arange(20_000, dtype=torch.float32)[:, None]
        for chunk in stream.split(37):
            reservoir.add(chunk, -chunk)
        true, predicted = reservoir.points()
        assert len(true) == 500 and np.array_equal(predicted, -true)
        return true[:, 0]

    kept = sample(0)
    assert len(np.unique(kept)) == 500  # each row at most once
    assert abs(kept.mean() - 10_000) < 1_200  # about the middle of the stream
    counts, _ = np.histogram(kept, bins=4, range=(0, 20_000))
    assert counts.min() > 80  # every quarter of the stream is represented
    assert np.array_equal(kept, sample(0)) and not np.array_equal(kept, sample(1))


def test_no_batches_gives_zeros():
    for task in (_classification(), _multilabel(), _regression(), _causal_lm()):
        metrics = evaluator_for(task).compute()
        json.dumps(metrics, allow_nan=False)
        assert metrics["samples"] == 0 and metrics["task"] == task.name


EPOCHS = [
    {"kind": "epoch", "epoch": 1, "train_loss": 1.0, "val_loss": 1.2, "val_f1_macro": 0.4},
    {"kind": "epoch", "epoch": 2, "train_loss": 0.6, "val_f1_macro": None, "val_map": 0.5},
    {"kind": "epoch", "epoch": 3, "train_loss": 0.5, "val_loss": 0.9, "val_map": 0.6},
]


def _report(tmp_path, metrics, epochs=EPOCHS, **kw):
    write_report(metrics, epochs, tmp_path, title="run: test split", **kw)
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# run: test split\n")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    assert "![training curves](curves.png)" in md
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert "points" not in saved and saved["task"] == metrics["task"]
    return md


def test_classification_report(tmp_path):
    metrics, _, _ = _run(_classification(), _classification_batches(np.random.default_rng(0)))
    epochs = [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_accuracy": 0.4}]
    md = _report(tmp_path, metrics, epochs)
    assert (tmp_path / "confusion.png").read_bytes()[:8] == PNG
    assert f"| accuracy | {metrics['accuracy']:.4f} |" in md
    assert "## Per class" in md and "## Confusion matrix" in md
    assert md == markdown_report(metrics, "run: test split")
    assert headline(metrics) == [(k, metrics[k]) for k in HEADLINE]
    # metrics from before tasks (no "task" key) are classification's
    old = {k: v for k, v in metrics.items() if k != "task"}
    assert headline(old) == headline(metrics)


def test_multilabel_report(tmp_path):
    metrics, _, _ = _run(_multilabel(), _multilabel_batches(np.random.default_rng(0)))
    md = _report(tmp_path, metrics)
    assert "## Per label" in md
    rows = [line for line in md.splitlines() if re.match(r"\| l\d ", line)]
    assert len(rows) == 6 and rows[0].count("|") == 7
    for key in ("f1_micro", "f1_macro", "map"):
        assert f"| {key} | {metrics[key]:.4f} |" in md
    assert [k for k, _ in headline(metrics)][:3] == ["f1_micro", "f1_macro", "map"]
    assert not (tmp_path / "confusion.png").exists()


def test_regression_report(tmp_path):
    task = _regression()
    metrics, _, _ = _run(task, _regression_batches(np.random.default_rng(0), task))
    md = _report(tmp_path, metrics, epochs=[])
    assert "## Per output" in md and "![predicted vs true](predicted_vs_true.png)" in md
    assert len([line for line in md.splitlines() if re.match(r"\| y\d ", line)]) == 3
    assert f"| r2 | {metrics['r2']:.4f} |" in md
    assert (tmp_path / "predicted_vs_true.png").read_bytes()[:8] == PNG
    assert dict(headline(metrics)).keys() == {"mse", "rmse", "mae", "r2", "loss"}


def test_causal_lm_report(tmp_path):
    metrics, _, _ = _run(_causal_lm(), _causal_lm_batches(np.random.default_rng(0)))
    metrics["tokens_per_s"] = 1234.5
    samples = [
        {"prompt": "Once upon", "continuation": " a time"},
        {"prompt": "code: ```x```", "continuation": "done"},
    ]
    md = _report(tmp_path, metrics, samples_text=samples)
    assert "| perplexity |" in md and "| tokens | 104 |" in md and "| tokens_per_s |" in md
    assert "## Sampled continuations" in md
    assert md.count("### Sample ") == 2
    assert "```text\nOnce upon\n```" in md
    assert "````text\ncode: ```x```\n````" in md  # a fence the text cannot close
    assert headline(metrics) == [
        ("loss", metrics["loss"]),
        ("perplexity", metrics["perplexity"]),
        ("tokens_per_s", 1234.5),
    ]
    no_samples = markdown_report(metrics, "t")
    assert "Sampled continuations" not in no_samples


def test_other_task_report_and_curves_without_keys(tmp_path):
    metrics, _, _ = _run(_MeanAbsTask(), [(torch.ones(3, 1), torch.zeros(3, 1))])
    md = _report(tmp_path, metrics, epochs=[{"epoch": 1}, {"train_loss": None}])
    assert "| loss | 1.0000 |" in md
    assert headline(metrics) == [("loss", 1.0)]


def test_evaluate_imports_no_training_or_data():
    code = (
        "import sys, deepfleet.evaluate\n"
        "bad = [m for m in sys.modules if m.startswith(('deepfleet.train', "
        "'deepfleet.parallel', 'deepfleet.data'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _all_batches(name):
    rng = np.random.default_rng(5)
    if name == "regression":
        return list(_regression_batches(rng, _regression()))
    making = {
        "classification": _classification_batches,
        "multilabel": _multilabel_batches,
        "causal_lm": _causal_lm_batches,
    }
    return list(making[name](rng))


_BUILD = {
    "classification": _classification,
    "multilabel": _multilabel,
    "regression": _regression,
    "causal_lm": _causal_lm,
}


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        results = {}
        for name, build in _BUILD.items():
            evaluator = evaluator_for(build())
            for output, target in _all_batches(name)[rank::world]:
                evaluator.update(output, target)
            results[name] = {k: v for k, v in evaluator.compute().items() if k != "points"}
        if rank == 0:
            with open(out, "w") as handle:
                json.dump(results, handle)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
@pytest.mark.slow
def test_ranks_reduce_to_the_single_process_figures(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "reduced.json"
    # spawn: forking a process whose torch thread pools already ran can deadlock the child
    mp.start_processes(
        _rank_main, args=(2, port, str(out)), nprocs=2, join=True, start_method="spawn"
    )
    reduced = json.loads(out.read_text())
    for name, build in _BUILD.items():
        alone, _, _ = _run(build(), _all_batches(name))
        alone.pop("points", None)
        assert _close(reduced[name], json.loads(json.dumps(alone))), name


def _close(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b
