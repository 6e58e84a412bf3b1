"""Classification metrics with torchmetrics (the same objects sync across ranks)."""

from __future__ import annotations

from typing import Any

import torch


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
    # Imported here, not at the top: the pipeline imports this module in every training
    # process, which never scores, and torchmetrics (with the matplotlib it loads) is tens
    # of MiB of resident memory.
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassPrecision,
        MulticlassRecall,
    )

    y_true = y_true.long().cpu()
    y_pred = y_pred.long().cpu()
    names = class_names or [str(i) for i in range(num_classes)]
    kw = {"num_classes": num_classes, "zero_division": 0}
    out: dict[str, Any] = {
        "samples": int(len(y_true)),
        "accuracy": MulticlassAccuracy(num_classes=num_classes, average="micro")(y_pred, y_true),
    }
    for average in ("macro", "weighted"):
        out[f"precision_{average}"] = MulticlassPrecision(average=average, **kw)(y_pred, y_true)
        out[f"recall_{average}"] = MulticlassRecall(average=average, **kw)(y_pred, y_true)
        out[f"f1_{average}"] = MulticlassF1Score(average=average, **kw)(y_pred, y_true)
    out = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    precision = MulticlassPrecision(average=None, **kw)(y_pred, y_true)
    recall = MulticlassRecall(average=None, **kw)(y_pred, y_true)
    f1 = MulticlassF1Score(average=None, **kw)(y_pred, y_true)
    support = torch.bincount(y_true, minlength=num_classes)
    out["per_class"] = [
        {
            "class": names[i],
            "precision": precision[i].item(),
            "recall": recall[i].item(),
            "f1": f1[i].item(),
            "support": int(support[i]),
        }
        for i in range(num_classes)
    ]
    confusion = MulticlassConfusionMatrix(num_classes=num_classes)(y_pred, y_true)
    out["confusion_matrix"] = confusion.tolist()
    out["class_names"] = names
    return out
