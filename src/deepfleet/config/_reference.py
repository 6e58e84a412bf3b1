"""The job-file reference (docs/job-file.md), generated from the models so it cannot drift."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from deepfleet.config._job import JobConfig


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        return json.dumps(field.default)
    if field.default_factory is not None:
        value: Any = field.default_factory()
        if isinstance(value, BaseModel):
            return "(table)"
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "one phase with the defaults below"
        return json.dumps(value)
    return "(required)"


def _type(field) -> str:
    text = str(field.annotation).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")


def _table(prefix: str, model: type[BaseModel], lines: list[str]) -> None:
    nested = []
    lines += [
        f"## [{prefix}]",
        "",
        (model.__doc__ or "").strip(),
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (None,))[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((f"{prefix}.{name}", annotation))
            continue
        type_text = _type(field).replace("|", "or")
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            nested.append((f"[{prefix}.{name}]", inner))
            type_text = "array of tables"
        lines.append(
            f"| `{name}` | {type_text} | `{_default(field)}` | {field.description or ''} |"
        )
    lines.append("")
    for sub_prefix, sub in nested:
        _table(sub_prefix, sub, lines)


def reference_markdown() -> str:
    lines = [
        "# Job file reference",
        "",
        "Generated from `deepfleet.config` (`python -m deepfleet.config.reference`); "
        "a test keeps it in step with the code.",
        "",
        "A job file is TOML with one table per part of the job. Unknown keys are "
        "errors; errors name the key path and the bad value. Any key can be overridden "
        "from the command line with `--set table.key=value` (list items by index: "
        "`--set train.phases.0.lr=0.01`); values are TOML values, bare words are strings. "
        "Relative paths are relative to the job file.",
        "",
    ]
    for name, field in JobConfig.model_fields.items():
        _table(name, field.annotation, lines)
    return "\n".join(lines).rstrip() + "\n"
