from pydantic import Field

from deepfleet.config._base import Section
from deepfleet.config._data import DataSection
from deepfleet.config._evaluate import EvaluateSection, ExportSection
from deepfleet.config._model import ModelSection
from deepfleet.config._run import RunSection
from deepfleet.config._task import TaskSection
from deepfleet.config._track import TrackSection
from deepfleet.config._train import TrainSection


class JobConfig(Section):
    """A whole job: one TOML file, one table per part of the job."""

    run: RunSection = Field(default_factory=RunSection)
    task: TaskSection = Field(default_factory=TaskSection)
    data: DataSection = Field(default_factory=DataSection)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    export: ExportSection = Field(default_factory=ExportSection)
    track: TrackSection = Field(default_factory=TrackSection)
