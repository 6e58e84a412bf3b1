"""Evaluation: torchmetrics metrics and the written report."""

from deepfleet.evaluate._infer import predict_proba
from deepfleet.evaluate._metrics import classification_metrics
from deepfleet.evaluate._report import HEADLINE, markdown_report, write_report

__all__ = ["HEADLINE", "classification_metrics", "markdown_report", "predict_proba", "write_report"]
