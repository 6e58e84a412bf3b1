"""Reading a job file: TOML -> --set overrides -> validation, with one-line errors."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from deepfleet.config._job import JobConfig
from deepfleet.config._train import warn_stages_deprecated
from deepfleet.errors import UserError

DEFAULT_EXAMPLE = "digits"


def shipped_examples() -> dict[str, Path]:
    """Job files shipped with the package, by name (file stem)."""
    folder = Path(str(resources.files("deepfleet") / "examples"))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_job_path(spec: str | Path | None) -> Path:
    """A path to a job file, or the name of a shipped example; None means the default."""
    if spec is None:
        spec = DEFAULT_EXAMPLE
    path = Path(spec)
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        raise UserError(f"{spec}: is a folder, expected a job file (.toml)")
    examples = shipped_examples()
    if str(spec) in examples:
        return examples[str(spec)]
    raise UserError(
        f"{spec}: job file not found (shipped examples: {', '.join(examples) or 'none'})"
    )


def _parse_value(text: str) -> Any:
    """A --set value is a TOML value (3, 0.1, true, "x", [1, 2]); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `a.b.c=value` to the raw job dict; list items by index (train.phases.0.lr)."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment}: expected KEY=VALUE, e.g. train.epochs=3")
    key, text = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {assignment}: empty key")
    _phases_by_either_name(raw, parts)
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = _list_item(node, part, where)
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, dict | list):
            raise UserError(f"--set {assignment}: {where} is a value, not a table")
    last = parts[-1]
    value = _parse_value(text.strip())
    if isinstance(node, list):
        index = _list_index(node, last, key)
        node[index] = value
    else:
        node[last] = value


def _phases_by_either_name(raw: dict[str, Any], parts: list[str]) -> None:
    """train.stages (the old name) and train.phases in a --set key reach the same list,
    whichever of the two names the job file uses."""
    if len(parts) < 2 or parts[0] != "train" or parts[1] not in ("stages", "phases"):
        return
    train = raw.get("train")
    written = [n for n in ("phases", "stages") if isinstance(train, dict) and n in train]
    if parts[1] == "stages" and "stages" not in written:
        warn_stages_deprecated()
    parts[1] = written[0] if written else "phases"


def _list_index(node: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise UserError(f"--set {where}: no item {part} (the list has {len(node)})")
    return int(part)


def _list_item(node: list, part: str, where: str) -> Any:
    return node[_list_index(node, part, where)]


_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "extra_forbidden": "unknown key",
    "missing": "required key is missing",
    "literal_error": "must be one of {expected}",
    "string_too_short": "must not be empty",
}


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line for all problems: `train.batch_size: must be > 0, got -3`; the one formatter
    for the job file and for flags checked by the same models (`prefix` names their table).
    A check of a whole table names the table, not every value in it."""
    lines = []
    for item in err.errors():
        loc = ".".join([prefix, *map(str, item["loc"])] if prefix else map(str, item["loc"]))
        template = _MESSAGES.get(item["type"])
        ctx = item.get("ctx") or {}
        msg = template.format(**ctx) if template else item["msg"]
        msg = msg.removeprefix("Value error, ")
        if item["type"] in ("missing", "model_type") or isinstance(item.get("input"), dict):
            lines.append(f"{loc or 'job'}: {msg}")
        else:
            lines.append(f"{loc or 'job'}: {msg}, got {item['input']!r}")
    return "; ".join(lines)


def validate_job(raw: dict[str, Any]) -> JobConfig:
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err)) from None


def _absolutize(job: JobConfig, base: Path) -> JobConfig:
    """Paths in a job file are relative to the file; the resolved copy holds absolute ones."""
    data = job.data
    from deepfleet.storage import is_remote  # imports nothing more

    if data.prepared and not is_remote(data.prepared) and not Path(data.prepared).is_absolute():
        data.prepared = str((base / data.prepared).resolve())
    if data.cache_dir and not Path(data.cache_dir).expanduser().is_absolute():
        data.cache_dir = str((base / data.cache_dir).resolve())
    kind, sep, where = data.source.partition(":")
    if (
        sep
        and kind.replace("-", "").isalnum()
        and not Path(where).is_absolute()
        and (base / where).exists()
    ):
        data.source = f"{kind}:{(base / where).resolve()}"
    elif not Path(data.source).is_absolute() and (base / data.source).exists():
        data.source = str((base / data.source).resolve())
    if data.tokenizer and not Path(data.tokenizer).is_absolute():
        data.tokenizer = str((base / data.tokenizer).resolve())
    if data.key and not data.key.startswith("env:") and not Path(data.key).is_absolute():
        data.key = str((base / data.key).resolve())
    key = job.export.signing_key
    if key and not Path(key).is_absolute():
        job.export.signing_key = str((base / key).resolve())
    if ":" in job.model.name and job.model.path is None:
        job.model.path = str(base)
    if ":" in job.task.name and job.task.path is None:
        job.task.path = str(base)
    return job


def load_job(spec: str | Path | None = None, overrides: list[str] | None = None) -> JobConfig:
    """Load, override and validate a job file. Raises UserError with a one-line message."""
    path = resolve_job_path(spec)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{path}: malformed TOML: {err}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a UTF-8 text file") from None
    for assignment in overrides or []:
        apply_override(raw, assignment)
    return _absolutize(validate_job(raw), path.parent)


def job_from_dict(raw: dict[str, Any]) -> JobConfig:
    """Validate a job given as a dict (tests, the Python API)."""
    return validate_job(raw)


def dump_job(job: JobConfig) -> str:
    """The resolved job as TOML (what a run folder keeps as job.toml)."""
    return tomli_w.dumps(job.model_dump(mode="json", exclude_none=True))
