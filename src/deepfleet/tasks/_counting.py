"""Metric updates that only count, outside deterministic mode (no torchmetrics import here:
the package's tasks load without it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def counting() -> Iterator[None]:
    """Metric updates that only count (bincounts of thresholds and labels): integer sums
    give the same result in any order, so deterministic mode adds nothing there, while
    torchmetrics' deterministic fallback for bincount builds an N x bins matrix (gigabytes
    for a binned average precision). Training numerics keep the job's setting."""
    import torch  # here, not at the top: the tasks package loads without torch (prepare)

    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if enabled:
        torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        if enabled:
            torch.use_deterministic_algorithms(True, warn_only=warn_only)
