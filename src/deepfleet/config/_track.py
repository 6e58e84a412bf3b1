from typing import Literal

from pydantic import Field, field_validator

from deepfleet.config._base import Section


class TrackSection(Section):
    """[track]: copies of the training records; metrics.jsonl stays the record of the run."""

    loggers: list[Literal["tensorboard", "csv"]] = Field(
        default_factory=list,
        description="Copies of the records in other formats, in the run folder: "
        '"tensorboard" (event files in tensorboard/, for `tensorboard --logdir runs/`), '
        '"csv" (metrics_epochs.csv and metrics_steps.csv). A logger that fails is reported '
        "once and switched off; training goes on.",
    )

    @field_validator("loggers")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each logger at most once")
        return value
