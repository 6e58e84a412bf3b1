"""The evaluation report: metrics.json, report.md and the task's PNGs.

Every task gets curves.png (the per-epoch loss beside the task's other per-epoch metrics);
classification adds confusion.png, regression predicted_vs_true.png. matplotlib is imported
when a figure is drawn."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from deepfleet._atomic import write_json_atomic, write_text_atomic

HEADLINE = [
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "precision_weighted",
    "recall_weighted",
    "f1_weighted",
]

# the main figures of each built-in task, in the order a summary shows them
HEADLINES: dict[str, list[str]] = {
    "classification": HEADLINE,
    "multilabel": ["f1_micro", "f1_macro", "map", "precision_micro", "recall_micro", "loss"],
    "regression": ["r2", "rmse", "mae", "mse", "loss"],
    "causal_lm": ["loss", "perplexity", "tokens_per_s"],
}
_NOT_FIGURES = {"samples", "task", "split", "tokens", "threshold", "map_thresholds"}
MAX_CURVE_PANELS = 6  # the loss plus at most five other per-epoch metrics
MAX_SCATTER_PANELS = 4


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def task_of(metrics: dict[str, Any]) -> str:
    """The task a metrics dict is for; metrics written before tasks existed are
    classification's."""
    task = metrics.get("task")
    if task:
        return str(task)
    return "classification" if "confusion_matrix" in metrics else ""


def headline(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    """The main figures of `metrics` for its task: (name, value) pairs, those present only."""
    keys = HEADLINES.get(task_of(metrics))
    if keys is None:
        keys = [k for k in metrics if k not in _NOT_FIGURES]
    return [(k, float(metrics[k])) for k in keys if _number(metrics.get(k))]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not _number(value):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def _figure_table(rows: list[tuple[str, Any]]) -> list[str]:
    return ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in rows]


def _fenced(text: str, info: str = "text") -> list[str]:
    """`text` in a fenced code block whose fence no backtick run inside it can close."""
    longest, run = 0, 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", text, fence]


def _classification_markdown(metrics: dict[str, Any]) -> list[str]:
    lines = _figure_table([(k, metrics[k]) for k in HEADLINE])
    lines += [
        "",
        "## Per class",
        "",
        "| class | precision | recall | f1 | support |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {c['class']} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} "
        f"| {c['support']} |"
        for c in metrics["per_class"]
    ]
    names = metrics["class_names"]
    lines += [
        "",
        "## Confusion matrix (rows: true, columns: predicted)",
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    lines += [
        f"| **{names[i]}** | " + " | ".join(str(v) for v in row) + " |"
        for i, row in enumerate(metrics["confusion_matrix"])
    ]
    return lines + ["", "![confusion matrix](confusion.png)"]


def _multilabel_markdown(metrics: dict[str, Any]) -> list[str]:
    keys = ["loss", "f1_micro", "f1_macro", "precision_micro", "recall_micro"]
    keys += ["precision_macro", "recall_macro", "map"]
    lines = _figure_table([(k, metrics.get(k)) for k in keys])
    lines += [
        "",
        f"A label is predicted when its probability reaches {metrics.get('threshold', 0.5)}. "
        "mAP is the mean, over the labels with positive samples, of the average precision "
        f"(precision-recall curves binned at {metrics.get('map_thresholds', 'n/a')} "
        "thresholds); loss is the mean binary cross-entropy per label.",
        "",
        "## Per label",
        "",
        "| label | precision | recall | f1 | ap | support |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['label']} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['f1'])} "
        f"| {_fmt(r.get('ap'))} | {r['support']} |"
        for r in metrics.get("per_label", [])
    ]
    return lines


def _has_points(metrics: dict[str, Any]) -> bool:
    points = metrics.get("points") or {}
    return bool(points.get("true"))


def _regression_markdown(metrics: dict[str, Any]) -> list[str]:
    lines = _figure_table([(k, metrics.get(k)) for k in ("mse", "rmse", "mae", "r2", "loss")])
    lines += [
        "",
        "mse, rmse, mae and r2 are in the targets' units, averaged uniformly over the outputs; "
        "loss is the mean squared error of the standardised targets the model learns.",
        "",
        "## Per output",
        "",
        "| output | mse | rmse | mae | r2 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['output']} | {_fmt(r['mse'])} | {_fmt(r['rmse'])} | {_fmt(r['mae'])} "
        f"| {_fmt(r['r2'])} |"
        for r in metrics.get("per_output", [])
    ]
    if _has_points(metrics):
        shown = len(metrics["points"]["true"])
        lines += [
            "",
            f"## Predicted vs true ({shown} sampled rows)",
            "",
            "![predicted vs true](predicted_vs_true.png)",
        ]
    return lines


def _causal_lm_markdown(
    metrics: dict[str, Any], samples_text: list[dict[str, str]] | None
) -> list[str]:
    keys = ("loss", "perplexity", "tokens", "tokens_per_s")
    lines = _figure_table([(k, metrics[k]) for k in keys if k in metrics])
    lines += ["", "loss is the mean cross-entropy per target token; perplexity is exp(loss)."]
    if samples_text:
        lines += ["", "## Sampled continuations"]
        for i, sample in enumerate(samples_text, 1):
            lines += ["", f"### Sample {i}", "", "Prompt:", ""]
            lines += _fenced(str(sample.get("prompt", "")))
            lines += ["", "Continuation:", ""]
            lines += _fenced(str(sample.get("continuation", "")))
    return lines


def _other_markdown(metrics: dict[str, Any]) -> list[str]:
    rows = [(k, v) for k, v in metrics.items() if k not in _NOT_FIGURES and _number(v)]
    return _figure_table(rows)


def markdown_report(
    metrics: dict[str, Any], title: str, samples_text: list[dict[str, str]] | None = None
) -> str:
    task = task_of(metrics)
    lines = [f"# {title}", ""]
    if task and task != "classification":
        lines += [f"Task: {task}", ""]
    lines += [f"Samples evaluated: {metrics.get('samples', 0)}", ""]
    if task == "classification":
        lines += _classification_markdown(metrics)
    elif task == "multilabel":
        lines += _multilabel_markdown(metrics)
    elif task == "regression":
        lines += _regression_markdown(metrics)
    elif task == "causal_lm":
        lines += _causal_lm_markdown(metrics, samples_text)
    else:
        lines += _other_markdown(metrics)
    lines += ["", "![training curves](curves.png)", ""]
    return "\n".join(lines)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to PNG
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    plt = _pyplot()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path) -> None:
    plt = _pyplot()
    data = np.asarray(matrix)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 10 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = data.max() / 2 if data.size else 0
    for (i, j), value in np.ndenumerate(data):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > threshold else "black",
        )
    ax.set_title("Confusion matrix")
    _save_figure(fig, path)


def _curve_names(epochs: list[dict[str, Any]]) -> list[str]:
    """The per-epoch metrics besides the loss: val_* (but val_loss) and any train_* beside
    them (classification's train_accuracy), by their bare names."""
    names: list[str] = []
    for record in epochs:
        for key, value in record.items():
            if not _number(value):
                continue
            if key.startswith("val_") and key != "val_loss":
                base = key.removeprefix("val_")
            elif key == "train_accuracy":
                base = "accuracy"
            else:
                continue
            if base not in names:
                names.append(base)
    return names[: MAX_CURVE_PANELS - 1]


def _series(epochs: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, record in enumerate(epochs):
        value = record.get(key)
        if _number(value) and math.isfinite(value):
            epoch = record.get("epoch")
            xs.append(float(epoch) if _number(epoch) else float(i + 1))
            ys.append(float(value))
    return xs, ys


def plot_curves(epochs: list[dict[str, Any]], path: Path) -> None:
    """train/val loss per epoch beside the other per-epoch metrics present."""
    plt = _pyplot()
    panels = ["loss", *_curve_names(epochs)]
    cols = min(len(panels), 3)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, panels, strict=False):
        for split in ("train", "val"):
            xs, ys = _series(epochs, f"{split}_{name}")
            if xs:
                ax.plot(xs, ys, label=split, marker="o" if len(xs) == 1 else None)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("Training curves")
    _save_figure(fig, path)


def plot_predicted_vs_true(points: dict[str, Any], path: Path) -> None:
    """A scatter of sampled (true, predicted) rows per output, with the line y = x."""
    plt = _pyplot()
    true = np.asarray(points["true"], dtype=np.float64)
    predicted = np.asarray(points["predicted"], dtype=np.float64)
    outputs = min(true.shape[1], MAX_SCATTER_PANELS)
    names = list(points.get("outputs") or [str(i) for i in range(outputs)])
    fig, axes = plt.subplots(1, outputs, figsize=(4.5 * outputs, 4.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        x, y = true[:, i], predicted[:, i]
        ax.scatter(x, y, s=6, alpha=0.4, edgecolors="none")
        low, high = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        if low == high:
            low, high = low - 1.0, high + 1.0
        ax.plot([low, high], [low, high], color="black", linewidth=1, label="y = x")
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.set_title(names[i] if i < len(names) else str(i))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle(f"Predicted vs true ({len(true)} sampled rows)")
    _save_figure(fig, path)


def write_report(
    metrics: dict[str, Any],
    epochs: list[dict[str, Any]],
    out: Path,
    title: str = "Evaluation report",
    samples_text: list[dict[str, str]] | None = None,
) -> None:
    """metrics.json (without the plotted sample of points), report.md, curves.png and the
    task's own figure. `samples_text`: a causal language model's sampled continuations,
    {"prompt": ..., "continuation": ...} each."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = task_of(metrics)
    write_json_atomic(out / "metrics.json", {k: v for k, v in metrics.items() if k != "points"})
    write_text_atomic(out / "report.md", markdown_report(metrics, title, samples_text))
    if task == "classification":
        plot_confusion(metrics["confusion_matrix"], metrics["class_names"], out / "confusion.png")
    elif task == "regression" and _has_points(metrics):
        plot_predicted_vs_true(metrics["points"], out / "predicted_vs_true.png")
    plot_curves(epochs, out / "curves.png")
