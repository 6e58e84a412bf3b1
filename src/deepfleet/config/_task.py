from pydantic import Field

from deepfleet.config._base import Section


class TaskSection(Section):
    """[task]: what the model learns; it owns the loss, the metrics and the targets' form."""

    name: str = Field(
        "classification",
        min_length=1,
        description="classification (one class per sample), multilabel (a 0/1 vector per "
        "sample), regression (one or several numbers per sample), causal_lm (next token of "
        "a text source), or a user's module.path:factory returning a task.",
    )
    path: str | None = Field(
        None, description="Folder searched first for a user's task module; the job file's."
    )
