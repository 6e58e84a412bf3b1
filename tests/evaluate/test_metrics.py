"""Every metric against scikit-learn on the same predictions."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from deepfleet.evaluate import classification_metrics, markdown_report, write_report


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = 7
    y_true = rng.integers(0, classes, 500)
    # Mostly right, with some classes never predicted to exercise zero division.
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, classes - 2, 500))
    got = classification_metrics(torch.from_numpy(y_true), torch.from_numpy(y_pred), classes)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, average=avg, labels=range(classes), zero_division=0
        )
        assert got[f"precision_{avg}"] == pytest.approx(p, abs=1e-6)
        assert got[f"recall_{avg}"] == pytest.approx(r, abs=1e-6)
        assert got[f"f1_{avg}"] == pytest.approx(f, abs=1e-6)
    p, r, f, support = skm.precision_recall_fscore_support(
        y_true, y_pred, average=None, labels=range(classes), zero_division=0
    )
    for i, row in enumerate(got["per_class"]):
        assert row["precision"] == pytest.approx(p[i], abs=1e-6)
        assert row["recall"] == pytest.approx(r[i], abs=1e-6)
        assert row["f1"] == pytest.approx(f[i], abs=1e-6)
        assert row["support"] == support[i]
    expected = skm.confusion_matrix(y_true, y_pred, labels=range(classes))
    assert np.array_equal(np.array(got["confusion_matrix"]), expected)


def test_report_files(tmp_path):
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    p = torch.tensor([0, 2, 2, 2, 1, 0])
    m = classification_metrics(y, p, 3, ["cat", "dog", "eel"])
    epochs = [
        {
            "epoch": 1,
            "train_loss": 1.0,
            "train_accuracy": 0.5,
            "val_loss": 1.1,
            "val_accuracy": 0.4,
        },
        {
            "epoch": 2,
            "train_loss": 0.5,
            "train_accuracy": 0.8,
            "val_loss": 0.7,
            "val_accuracy": 0.6,
        },
    ]
    write_report(m, epochs, tmp_path)
    for name in ("metrics.json", "report.md", "confusion.png", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = markdown_report(m, "t")
    assert "| accuracy | 0.8333 |" in md
    assert "| **dog** | 0 | 1 | 1 |" in md
