"""Packages whose public names are imported on first use (PEP 562), so a command imports only
the modules it touches: `verify-data` needs manifests and hashlib, not torch or pyarrow's
file systems, and a benchmark's workers start without the reporting stack."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, where: Mapping[str, str], names: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`: each name of `where` comes from the module
    it maps to, imported the first time the name is asked for."""
    namespace = sys.modules[package].__dict__
    listed = sorted(names)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
