"""Evaluation: each task's metrics over a split, streamed a batch at a time, and the written
report."""

from deepfleet.evaluate._infer import predict_proba
from deepfleet.evaluate._metrics import classification_metrics
from deepfleet.evaluate._report import HEADLINE, headline, markdown_report, write_report
from deepfleet.evaluate._tasks import Evaluator, evaluator_for

__all__ = [
    "HEADLINE",
    "Evaluator",
    "classification_metrics",
    "evaluator_for",
    "headline",
    "markdown_report",
    "predict_proba",
    "write_report",
]
