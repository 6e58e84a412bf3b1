"""Tracking: loggers fed from the metrics records (TensorBoard, CSV), and the runs table and
comparison (`deepfleet runs ls`, `deepfleet runs compare`)."""

from deepfleet.track._compare import Comparison, compare_runs
from deepfleet.track._loggers import open_loggers
from deepfleet.track._runs import RunRow, list_runs

__all__ = ["Comparison", "RunRow", "compare_runs", "list_runs", "open_loggers"]
