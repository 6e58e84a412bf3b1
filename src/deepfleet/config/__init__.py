"""The job file: pydantic models of every table, loading, --set overrides, shipped examples."""

from deepfleet.config._augment import AugmentSection
from deepfleet.config._data import DataSection
from deepfleet.config._evaluate import EvaluateSection, ExportSection
from deepfleet.config._job import JobConfig
from deepfleet.config._load import (
    apply_override,
    dump_job,
    format_validation_error,
    job_from_dict,
    load_job,
    resolve_job_path,
    shipped_examples,
)
from deepfleet.config._model import ModelSection
from deepfleet.config._parallel import (
    CheckpointSection,
    EarlyStoppingSection,
    ParallelSection,
    PipelineSection,
    ProfileSection,
)
from deepfleet.config._reference import reference_markdown
from deepfleet.config._run import RunSection
from deepfleet.config._task import TaskSection
from deepfleet.config._track import TrackSection
from deepfleet.config._train import PhaseSection, TrainSection

__all__ = [
    "AugmentSection",
    "CheckpointSection",
    "DataSection",
    "EarlyStoppingSection",
    "EvaluateSection",
    "ExportSection",
    "JobConfig",
    "ModelSection",
    "PhaseSection",
    "ParallelSection",
    "PipelineSection",
    "ProfileSection",
    "RunSection",
    "TaskSection",
    "TrackSection",
    "TrainSection",
    "apply_override",
    "dump_job",
    "format_validation_error",
    "job_from_dict",
    "load_job",
    "reference_markdown",
    "resolve_job_path",
    "shipped_examples",
]
