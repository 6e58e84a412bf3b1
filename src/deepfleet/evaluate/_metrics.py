"""Classification metrics from a confusion matrix: the streamed evaluation accumulates the
matrix a batch at a time, `classification_metrics` builds it from whole tensors; both read
every figure off the same counts."""

from __future__ import annotations

from typing import Any

import torch


def confusion_counts(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [num_classes, num_classes] counts, rows true, columns predicted."""
    cells = y_true.long().flatten() * num_classes + y_pred.long().flatten()
    counts = torch.bincount(cells, minlength=num_classes * num_classes)
    if counts.numel() != num_classes * num_classes:
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    return counts.view(num_classes, num_classes)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))


def metrics_from_confusion(
    confusion: torch.Tensor, class_names: list[str] | None = None
) -> dict[str, Any]:
    """Accuracy; precision, recall, F1 (macro and weighted); per-class table; the matrix.

    Every class counts in the macro averages, those absent from both truth and prediction
    with 0, as scikit-learn's precision_recall_fscore_support(labels=range(classes),
    zero_division=0).
    """
    counts = confusion.detach().cpu().long()
    classes = counts.shape[0]
    names = list(class_names) if class_names else [str(i) for i in range(classes)]
    matrix = counts.double()
    tp = matrix.diagonal()
    support = matrix.sum(1)
    predicted = matrix.sum(0)
    total = matrix.sum()
    per = {
        "precision": _ratio(tp, predicted),
        "recall": _ratio(tp, support),
        "f1": _ratio(2 * tp, predicted + support),
    }
    out: dict[str, Any] = {
        "samples": int(counts.sum()),
        "accuracy": float(_ratio(tp.sum(), total)),
    }
    for average in ("macro", "weighted"):
        for name in ("precision", "recall", "f1"):
            values = per[name]
            if average == "macro":
                value = values.mean() if classes else values.sum()
            else:
                value = _ratio((values * support).sum(), total)
            out[f"{name}_{average}"] = float(value)
    out["per_class"] = [
        {
            "class": names[i],
            "precision": float(per["precision"][i]),
            "recall": float(per["recall"][i]),
            "f1": float(per["f1"][i]),
            "support": int(counts[i].sum()),
        }
        for i in range(classes)
    ]
    out["confusion_matrix"] = counts.tolist()
    out["class_names"] = names
    return out


def classification_metrics(
    y_true: torch.Tensor,
    y_pred: torch.Tensor,
    num_classes: int,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy; precision, recall, F1 (macro and weighted); per-class table; confusion matrix.

    Classes absent from both truth and prediction count as 0 in macro averages, as in
    scikit-learn with zero_division=0.
    """
    counts = confusion_counts(y_true.cpu(), y_pred.cpu(), num_classes)
    return metrics_from_confusion(counts, class_names)
