"""Shared base for every section of the job file: unknown keys are errors."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A table of the job file. Unknown keys are rejected so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
