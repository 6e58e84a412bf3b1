"""A task by name (classification, multilabel, regression, causal_lm) or a user's
`module.path:factory`, called with the data set's Targets (None while preparing)."""

from __future__ import annotations

from collections.abc import Callable

from deepfleet._factory import import_factory
from deepfleet.errors import UserError
from deepfleet.tasks._causal_lm import CausalLMTask
from deepfleet.tasks._classification import ClassificationTask
from deepfleet.tasks._multilabel import MultilabelTask
from deepfleet.tasks._protocol import Targets, Task
from deepfleet.tasks._regression import RegressionTask

TASKS: dict[str, Callable[[Targets | None], Task]] = {
    "classification": ClassificationTask,
    "multilabel": MultilabelTask,
    "regression": RegressionTask,
    "causal_lm": CausalLMTask,
}
_MEMBERS = ("name", "monitor", "loss", "count", "metrics", "encode_targets", "check")


def build_task(spec: str, targets: Targets | None = None, search_path: str | None = None) -> Task:
    """The task `spec` names, bound to a data set's targets."""
    if spec in TASKS:
        return TASKS[spec](targets)
    if ":" not in spec:
        raise UserError(
            f"task.name: unknown task {spec!r} ({', '.join(TASKS)}; or module.path:factory)"
        )
    task = import_factory(spec, search_path, "task.name")(targets)
    missing = [m for m in _MEMBERS if not hasattr(task, m)]
    if missing:
        raise UserError(f"task.name: {spec} returned an object without {', '.join(missing)}")
    return task
