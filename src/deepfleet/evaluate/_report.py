"""The evaluation report: metrics.json, report.md, confusion.png, curves.png."""

from __future__ import annotations

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


def markdown_report(metrics: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"Samples evaluated: {metrics['samples']}",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {metrics[k]:.4f} |" for k in HEADLINE]
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
    lines += ["", "![confusion matrix](confusion.png)", "", "![training curves](curves.png)", ""]
    return "\n".join(lines)


def _pyplot():
    """matplotlib's pyplot on the Agg backend, imported at the first plot: `deepfleet train`
    imports this package (through the pipeline) but never plots, and matplotlib would add
    tens of MiB to every training process."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to PNG
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    tmp.replace(path)


def plot_confusion(matrix: list[list[int]], names: list[str], path: Path) -> None:
    data = np.asarray(matrix)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = _pyplot().subplots(figsize=(size, size))
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


def plot_curves(epochs: list[dict[str, Any]], path: Path) -> None:
    fig, (loss_ax, acc_ax) = _pyplot().subplots(1, 2, figsize=(10, 4))
    x = [r["epoch"] for r in epochs]
    loss_ax.plot(x, [r["train_loss"] for r in epochs], label="train")
    acc_ax.plot(x, [r["train_accuracy"] for r in epochs], label="train")
    if epochs and epochs[0].get("val_loss") is not None:
        loss_ax.plot(x, [r["val_loss"] for r in epochs], label="val")
        acc_ax.plot(x, [r["val_accuracy"] for r in epochs], label="val")
    for ax, name in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    _save_figure(fig, path)


def write_report(
    metrics: dict[str, Any],
    epochs: list[dict[str, Any]],
    out: Path,
    title: str = "Evaluation report",
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.md", markdown_report(metrics, title))
    plot_confusion(metrics["confusion_matrix"], metrics["class_names"], out / "confusion.png")
    plot_curves(epochs, out / "curves.png")
