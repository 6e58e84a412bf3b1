"""Source registry: a name or a path in [data].source becomes Samples."""

from __future__ import annotations

from collections.abc import Callable

from deepfleet.data._digits import load_digits_samples
from deepfleet.data._samples import Samples
from deepfleet.errors import UserError

BUILTIN_SOURCES: dict[str, Callable[[], Samples]] = {
    "digits": load_digits_samples,
}


def load_source(spec: str) -> Samples:
    """Load a built-in source by name."""
    if spec in BUILTIN_SOURCES:
        return BUILTIN_SOURCES[spec]()
    raise UserError(
        f"data.source: unknown source {spec!r} (built in: {', '.join(BUILTIN_SOURCES)})")
