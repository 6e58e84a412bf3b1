"""Tasks: what a job learns (classification, multi-label, regression, causal language model,
or the user's own). A task owns its loss, metrics, monitored metric and targets; the
strategies and the loop are the same for all of them."""

from deepfleet.tasks._causal_lm import CausalLMTask
from deepfleet.tasks._classification import ClassificationTask, encode_labels
from deepfleet.tasks._counting import counting
from deepfleet.tasks._multilabel import MultilabelTask
from deepfleet.tasks._numeric import sigmoid, softmax
from deepfleet.tasks._protocol import Targets, Task, TaskMetrics, direction
from deepfleet.tasks._regression import RegressionTask, target_stats
from deepfleet.tasks._resolve import TASKS, build_task

__all__ = [
    "TASKS",
    "CausalLMTask",
    "ClassificationTask",
    "MultilabelTask",
    "RegressionTask",
    "Targets",
    "Task",
    "TaskMetrics",
    "build_task",
    "counting",
    "direction",
    "encode_labels",
    "sigmoid",
    "softmax",
    "target_stats",
]
