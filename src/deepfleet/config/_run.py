from typing import Literal

from pydantic import Field

from deepfleet.config._base import Section


class RunSection(Section):
    """[run]: naming, placement and reproducibility of one job."""

    name: str = Field("job", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Prefix of the run folder: runs/<name>-<UTC time>/.")
    runs_dir: str = Field("runs", description="Folder that holds run folders.")
    seed: int = Field(0, ge=0, description="Seeds data splits, shuffles, init and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when present, else CPU.")
    deterministic: bool = Field(
        True, description="Ask torch for deterministic kernels (repeatable CPU runs).")
