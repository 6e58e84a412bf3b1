"""The bundle: a folder that holds everything needed to run a trained model elsewhere.

bundle/
  model.json          architecture, input spec, class names, versions, sha256 of every file
  weights.safetensors the weights (no pickle anywhere)
  metrics.json        the evaluation metrics, when the run was evaluated
  job.toml            the job that produced it
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepfleet import __version__
from deepfleet._atomic import atomic_dir, sha256_file, write_json_atomic
from deepfleet.config import ModelSection
from deepfleet.errors import UserError
from deepfleet.models import build_model
from deepfleet.train import load_weights, save_weights

FORMAT = "deepfleet.bundle/1"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


@dataclass
class LoadedBundle:
    """A bundle read back: the model in eval mode and its description."""

    root: Path
    spec: dict[str, Any]
    model: nn.Module

    @property
    def class_names(self) -> list[str]:
        return list(self.spec["class_names"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.spec["input"]["shape"])

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "model"))


def export_bundle(model: nn.Module, out: Path, *, name: str, model_section: ModelSection,
                  input_shape: tuple[int, ...], class_names: list[str],
                  extra_files: dict[str, Path] | None = None,
                  extra_spec: dict[str, Any] | None = None) -> Path:
    """Write a bundle folder atomically (replacing an older one) and return its path."""
    out = Path(out)
    with atomic_dir(out, replace=True) as tmp:
        save_weights(model, tmp / WEIGHTS)
        for target, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / target)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        spec = {
            "format": FORMAT,
            "name": name,
            "architecture": model_section.model_dump(mode="json", exclude_none=True),
            "input": {"shape": list(input_shape), "dtype": "float32"},
            "output": {"kind": "logits", "num_classes": len(class_names)},
            "class_names": class_names,
            "versions": {"deepfleet": __version__, "torch": torch.__version__,
                         "cuda": torch.version.cuda},
            "files": files,
            **(extra_spec or {}),
        }
        write_json_atomic(tmp / MODEL_JSON, spec)
    return out


def read_bundle_spec(root: Path) -> dict[str, Any]:
    """model.json, with every file it lists present and unchanged."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: bundle folder not found")
    spec_path = root / MODEL_JSON
    if not spec_path.is_file():
        raise UserError(f"{root}: bundle is missing {MODEL_JSON}")
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{spec_path}: not valid JSON ({err})") from None
    if spec.get("format") != FORMAT:
        raise UserError(f"{spec_path}: unknown bundle format {spec.get('format')!r}")
    for name, digest in spec.get("files", {}).items():
        path = root / name
        if not path.is_file():
            raise UserError(f"{root}: bundle is missing {name}")
        if sha256_file(path) != digest:
            raise UserError(f"{root}: {name} does not match its sha256 in {MODEL_JSON}")
    if WEIGHTS not in spec.get("files", {}):
        raise UserError(f"{root}: bundle is missing {WEIGHTS}")
    return spec


def load_bundle(root: str | Path, device: torch.device | str = "cpu") -> LoadedBundle:
    """Rebuild the model from model.json and load its safetensors weights (never unpickles)."""
    root = Path(root)
    spec = read_bundle_spec(root)
    section = ModelSection.model_validate(spec["architecture"])
    model = build_model(section, spec["input"]["shape"], len(spec["class_names"]))
    load_weights(model, root / WEIGHTS)
    model.to(device).eval()
    return LoadedBundle(root=root.resolve(), spec=spec, model=model)


def write_spec_file(root: Path, name: str, obj: Any) -> None:
    """Add a JSON file to an existing bundle and record its checksum in model.json."""
    write_json_atomic(root / name, obj)
    spec = json.loads((root / MODEL_JSON).read_text())
    spec["files"][name] = sha256_file(root / name)
    write_json_atomic(root / MODEL_JSON, spec)
