from typing import Literal

from pydantic import Field

from deepfleet.config._base import Section


class EvaluateSection(Section):
    """[evaluate]: which split the report is computed on."""

    split: Literal["train", "val", "test"] = Field("test", description="Split to evaluate.")
    batch_size: int = Field(512, gt=0, description="Inference batch size.")


class ExportSection(Section):
    """[export]: what goes into the bundle."""

    checkpoint: Literal["best", "last"] = Field("best", description="Weights to export.")
    onnx: bool = Field(True, description="Also write model.onnx, checked against PyTorch.")
    signing_key: str | None = Field(
        None,
        description="EC private key (deepfleet keys new --signing) that signs the "
        "bundle; relative to the job file.",
    )
