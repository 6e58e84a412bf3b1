from typing import Literal

from pydantic import Field

from deepfleet.config._base import Section


class RunSection(Section):
    """[run]: naming, placement and reproducibility of one job."""

    name: str = Field(
        "job",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of the run folder: runs/<name>-<UTC time>/.",
    )
    runs_dir: str = Field(
        "runs",
        description="Folder that holds run folders, or a URL (s3://bucket/runs): then each "
        "node works in a local copy and the URL keeps the run and its checkpoints.",
    )
    seed: int = Field(0, ge=0, description="Seeds data splits, shuffles, init and dropout.")
    device: Literal["auto", "cpu", "cuda", "xpu", "mps"] = Field(
        "auto",
        description="auto: CUDA (ROCm too) when present, else an Intel XPU, else Apple MPS, "
        "else CPU. On CUDA and XPU each process takes the device of its local rank; MPS "
        "runs one process.",
    )
    deterministic: bool = Field(
        True,
        description="Ask torch for deterministic kernels (repeatable CPU runs). On the "
        "CPU the thread count is part of the result too: the same job with the same "
        "run.threads repeats bit for bit, another thread count sums in another order.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads torch uses in each process. Default: "
        "$OMP_NUM_THREADS when set, else 1, as torchrun gives its workers (on a shared "
        "machine more threads than free cores is several times slower).",
    )
