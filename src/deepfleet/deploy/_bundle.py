"""The bundle: a folder that holds everything needed to run a trained model elsewhere.

bundle/
  model.json          architecture, input spec, class names, versions, sha256 of every file
  weights.safetensors the weights (no pickle anywhere)
  model.onnx          the same model as an ONNX graph (dynamic batch axis), checked at export
  metrics.json        the evaluation metrics, when the run was evaluated
  job.toml            the job that produced it
  model.sig           the OpenSSF model-signing signature, when the bundle was signed

Reading a bundle refuses anything model.json does not account for: a missing or changed file,
an added file, a folder, a symlink, or a listed name that points outside the folder.
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepfleet import __version__
from deepfleet._atomic import atomic_dir, read_json, sha256_file, write_json_atomic
from deepfleet.config import ModelSection
from deepfleet.data import Preprocessing
from deepfleet.deploy._onnx import ONNX_FILE, ONNX_TOLERANCE, export_onnx
from deepfleet.errors import UserError
from deepfleet.models import build_model
from deepfleet.weights import load_weights, save_weights

FORMAT = "deepfleet.bundle/1"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
SIGNATURE = "model.sig"


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
    def preprocessing(self) -> Preprocessing:
        """How raw samples become the model's input (identity for bundles without a record)."""
        return Preprocessing.from_json(self.spec.get("preprocessing"))

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "model"))

    @property
    def onnx_path(self) -> Path | None:
        """model.onnx when the bundle has one (bundles exported with onnx=False do not)."""
        return self.root / ONNX_FILE if ONNX_FILE in self.spec["files"] else None

    @property
    def version(self) -> str:
        """A short content version: the first 12 hex digits of the weights' sha256."""
        return str(self.spec["files"][WEIGHTS])[:12]


def export_bundle(
    model: nn.Module,
    out: Path,
    *,
    name: str,
    model_section: ModelSection,
    input_shape: tuple[int, ...],
    class_names: list[str],
    extra_files: dict[str, Path] | None = None,
    extra_spec: dict[str, Any] | None = None,
    onnx: bool = True,
    onnx_tolerance: float = ONNX_TOLERANCE,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Write a bundle folder atomically (replacing an older one) and return its path.

    With `onnx` the model is also exported as model.onnx and checked against PyTorch within
    `onnx_tolerance` (max absolute logit difference); a failed check aborts the export.
    `preprocessing` says how raw samples become the model's input (default: float32 as is);
    model.json records it, and predict and serve apply it to what they are given.
    """
    out = Path(out)
    model = model.to("cpu").eval()
    with atomic_dir(out, replace=True) as tmp:
        save_weights(model, tmp / WEIGHTS)
        onnx_record = (
            export_onnx(model, tmp / ONNX_FILE, tuple(input_shape), onnx_tolerance)
            if onnx
            else None
        )
        for target, source in (extra_files or {}).items():
            _check_name(out, target)
            shutil.copyfile(source, tmp / target)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        spec = {
            "format": FORMAT,
            "name": name,
            "architecture": model_section.model_dump(mode="json", exclude_none=True),
            "input": {"shape": list(input_shape), "dtype": "float32"},
            "preprocessing": (preprocessing or Preprocessing()).to_json(),
            "output": {"kind": "logits", "num_classes": len(class_names)},
            "class_names": class_names,
            "versions": _versions(),
            "files": files,
            **({"onnx": onnx_record} if onnx_record else {}),
            **(extra_spec or {}),
        }
        write_json_atomic(tmp / MODEL_JSON, spec)
    return out


def _versions() -> dict[str, Any]:
    import onnx
    import onnxruntime

    return {
        "deepfleet": __version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
    }


def _check_name(root: Path, name: str) -> None:
    """A bundle file is a plain name inside the folder: no separators, no `..`, no absolute."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or Path(name).is_absolute()
    ):
        raise UserError(f"{root}: bundle lists {name!r}, a path that leaves the bundle")


def _check_layout(root: Path, listed: set[str]) -> None:
    """Only regular files that model.json accounts for; never a symlink or a folder."""
    if root.is_symlink():
        raise UserError(f"{root}: the bundle folder is a symlink; refusing it")
    allowed = listed | {MODEL_JSON, SIGNATURE}
    for entry in sorted(root.iterdir()):
        if entry.is_symlink():
            raise UserError(f"{root}: {entry.name} is a symlink; bundles hold regular files only")
        if not entry.is_file():
            raise UserError(f"{root}: unexpected folder {entry.name} in the bundle")
        if entry.name not in allowed:
            raise UserError(f"{root}: unexpected file {entry.name} (not listed in {MODEL_JSON})")


def read_bundle_spec(root: Path) -> dict[str, Any]:
    """model.json, with every file it lists present and unchanged, and nothing else present."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: bundle folder not found")
    spec_path = root / MODEL_JSON
    if not spec_path.is_file():
        raise UserError(f"{root}: bundle is missing {MODEL_JSON}")
    spec = read_json(spec_path)
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        got = spec.get("format") if isinstance(spec, dict) else None
        raise UserError(f"{spec_path}: unknown bundle format {got!r}")
    files = spec.get("files")
    if not isinstance(files, dict):
        raise UserError(f"{spec_path}: no file list")
    for name in files:
        _check_name(root, name)
    _check_layout(root, set(files))
    for name, digest in files.items():
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
