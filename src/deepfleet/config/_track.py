from typing import Literal

from pydantic import Field, field_validator

from deepfleet.config._base import Section


class MlflowSection(Section):
    """[track.mlflow]: where the "mlflow" logger and the model registration send the run."""

    tracking_uri: str | None = Field(
        default=None,
        description="The MLflow tracking server (http://host:5000) or a local folder. "
        "Unset: MLflow's MLFLOW_TRACKING_URI environment variable, else ./mlruns. "
        "No user or password here: MLflow reads credentials from its own environment "
        "variables (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
        "MLFLOW_TRACKING_TOKEN).",
    )
    experiment: str | None = Field(
        default=None,
        description="The MLflow experiment the run goes into (created if missing). "
        "Unset: the run name.",
    )
    register_model: bool = Field(
        default=False,
        description="After export, log report/ and bundle/ as artifacts of the MLflow run and "
        "register the bundle as a new version of the registered model.",
    )
    registered_model: str | None = Field(
        default=None,
        description="The registered model's name. Unset: the run name.",
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is not None and "@" in value.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError(
                "no user or password in the URI: set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment"
            )
        return value


class TrackSection(Section):
    """[track]: copies of the training records; metrics.jsonl stays the record of the run."""

    loggers: list[Literal["tensorboard", "csv", "mlflow"]] = Field(
        default_factory=list,
        description="Copies of the records in other formats, in the run folder: "
        '"tensorboard" (event files in tensorboard/, for `tensorboard --logdir runs/`), '
        '"csv" (metrics_epochs.csv and metrics_steps.csv), '
        '"mlflow" (params, step and epoch metrics in an MLflow run: see [track.mlflow]). '
        "A logger that fails is reported once and switched off; training goes on.",
    )
    mlflow: MlflowSection = Field(
        default_factory=MlflowSection,
        description='MLflow settings, for the "mlflow" logger and model registration.',
    )

    @field_validator("loggers")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each logger at most once")
        return value
