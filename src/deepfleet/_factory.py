"""A user's `module.path:factory`, imported for the job-file key that names it (model.name,
task.name): the module is looked for in `search_path` (the job file's folder) first."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from deepfleet.errors import UserError


def import_factory(spec: str, search_path: str | None, key: str) -> Callable[..., Any]:
    """The callable `spec` names; one line naming `key` when it cannot be had."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"{key}: expected module.path:factory, got {spec!r}")
    if search_path and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"{key}: cannot import {module_name!r}: {err}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{key}: {module_name!r} has no callable {attr!r}")
    return factory
