from pydantic import Field, model_validator

from deepfleet.config._base import Section


class DataSection(Section):
    """[data]: where samples come from and how they are split into shards."""

    source: str = Field("digits", description="Built-in source name or a path to read.")
    prepared: str | None = Field(
        None, description="A folder already written by `deepfleet prepare`; used as is.")
    shards: int = Field(4, gt=0, description="Number of training shards to write.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of samples for validation.")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="Share of samples for testing.")

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> "DataSection":
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "val_fraction + test_fraction must be < 1, got "
                f"{self.val_fraction} + {self.test_fraction}")
        return self
