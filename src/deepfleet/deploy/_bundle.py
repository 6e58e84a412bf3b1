"""The bundle: a folder that holds everything needed to run a trained model elsewhere.

bundle/
  model.json          architecture, task and targets, input and output spec, class names,
                      versions, sha256 of every file
  weights.safetensors the weights of the bare model (no pickle anywhere)
  model.onnx          the task's exported model (the model plus its head, e.g. a regression's
                      de-standardisation) as an ONNX graph (dynamic batch axis), checked at export
  metrics.json        the evaluation metrics, when the run was evaluated
  job.toml            the job that produced it
  tokenizer.json      the tokenizer, for a model of token ids trained on text
  model.sig           the OpenSSF model-signing signature, when the bundle was signed

Bundles written before tasks existed have no "task" record: they are classification over
their class names, as they always were.

A bundle can live at a URL (s3://...): `publish_bundle` uploads a finished (signed) folder
with model.json and model.sig last, so a reader never finds them before the files they
describe; `fetch_bundle` downloads one into this node's cache, where the usual checks run.

Reading a bundle refuses anything model.json does not account for: a missing or changed file,
an added file, a folder, a symlink, or a listed name that points outside the folder.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepfleet import __version__
from deepfleet._atomic import atomic_dir, read_json, sha256_file, write_json_atomic
from deepfleet.config import ModelSection, TaskSection
from deepfleet.data import Preprocessing
from deepfleet.deploy._onnx import ONNX_FILE, ONNX_TOLERANCE, export_onnx, random_input
from deepfleet.errors import UserError
from deepfleet.models import build_model
from deepfleet.storage import (
    Store,
    download_tree,
    node_local,
    redact,
    upload_files,
)
from deepfleet.tasks import ClassificationTask, Targets, Task, build_task
from deepfleet.weights import load_weights, save_weights

FORMAT = "deepfleet.bundle/1"
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"
SIGNATURE = "model.sig"
TOKENIZER = "tokenizer.json"


@dataclass
class LoadedBundle:
    """A bundle read back: its task, the exported model (the task's head over the bare
    model, in eval mode: a regression answers in its targets' units) and its description."""

    root: Path
    spec: dict[str, Any]
    model: nn.Module
    task: Task = None  # type: ignore[assignment]  # None: read from the spec
    _tokenizer: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task is None:
            self.task = task_of(self.spec)

    @property
    def class_names(self) -> list[str]:
        return list(self.spec["class_names"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.spec["input"]["shape"])

    @property
    def input_dtype(self) -> str:
        """The dtype the model takes: float32, or int64 token ids."""
        return str(self.spec["input"].get("dtype", "float32"))

    @property
    def output_shape(self) -> tuple[int, ...] | None:
        """The exported output's shape per sample (None for bundles that do not record it)."""
        shape = self.spec.get("output", {}).get("shape")
        return tuple(int(d) for d in shape[1:]) if shape else None

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

    @property
    def vocab_size(self) -> int | None:
        """The number of token ids the model takes, for a model of token ids."""
        if not self.preprocessing.tokens:
            return None
        return _vocab(self.task, self.preprocessing)

    @property
    def has_tokenizer(self) -> bool:
        return TOKENIZER in self.spec["files"]

    @property
    def tokenizer(self):
        """The bundle's tokenizer.json (checked against its sha256 again), or None."""
        if not self.has_tokenizer:
            return None
        if self._tokenizer is None:
            from deepfleet.data._text import load_tokenizer

            path = self.root / TOKENIZER
            try:
                data = path.read_bytes()
            except OSError as err:
                raise UserError(f"{path}: cannot be read ({err.strerror})") from None
            if hashlib.sha256(data).hexdigest() != self.spec["files"][TOKENIZER]:
                raise UserError(
                    f"{self.root}: {TOKENIZER} does not match its sha256 in {MODEL_JSON}"
                )
            self._tokenizer = load_tokenizer(data)
        return self._tokenizer


def task_of(spec: dict[str, Any]) -> Task:
    """The task a bundle's model.json records, bound to its targets; bundles written before
    tasks are classification over their class names."""
    record = spec.get("task")
    if record is None:
        return ClassificationTask(Targets("int64", (), list(spec.get("class_names", [])), {}))
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        raise UserError(f"{MODEL_JSON}: the task record is not an object with a name")
    try:
        targets = Targets.from_json(record["targets"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{MODEL_JSON}: the task's targets cannot be read ({err})") from None
    search_path = record.get("path") or spec.get("architecture", {}).get("path")
    # A user's task is rebuilt from its factory (module.path:factory), like a user's model.
    return build_task(record.get("factory") or record["name"], targets, search_path)


def _vocab(task: Task, preprocessing: Preprocessing) -> int | None:
    """The vocabulary of token inputs: the targets' vocab_size (a causal LM's is its output
    size too); None for float inputs."""
    if not preprocessing.tokens:
        return None
    targets = getattr(task, "targets", None)
    vocab = targets.stats.get("vocab_size") if targets is not None else None
    if vocab is None:
        raise UserError(
            f"task {task.name}: the model takes token ids but the targets record no "
            "vocab_size, so no valid input can be drawn"
        )
    return int(vocab)


def export_bundle(
    model: nn.Module,
    out: Path,
    *,
    name: str,
    model_section: ModelSection,
    input_shape: tuple[int, ...],
    class_names: list[str],
    task: Task | None = None,
    task_factory: TaskSection | None = None,
    extra_files: dict[str, Path] | None = None,
    extra_spec: dict[str, Any] | None = None,
    onnx: bool = True,
    onnx_tolerance: float = ONNX_TOLERANCE,
    preprocessing: Preprocessing | None = None,
) -> Path:
    """Write a bundle folder atomically (replacing an older one) and return its path.

    `task` is the job's task bound to the data set's targets (None: classification over
    `class_names`); `task_factory` is the job's [task] when it names a user's factory, which
    loading the bundle calls again. The weights are the bare model's; model.onnx and the
    recorded output are the task's exported model, `task.export_head(model)`.

    With `onnx` the exported model is also written as model.onnx and checked against PyTorch
    within `onnx_tolerance` (max absolute output difference); a failed check aborts the
    export. `preprocessing` says how raw samples become the model's input (default: float32
    as is; token ids for text); model.json records it, and predict and serve apply it to
    what they are given.
    """
    out = Path(out)
    if task is None:
        task = ClassificationTask(Targets("int64", (), list(class_names), {}))
    targets = getattr(task, "targets", None)
    if targets is None:
        raise UserError(f"task {task.name}: a bundle needs the task bound to its data's targets")
    preprocessing = preprocessing or Preprocessing()
    vocab = _vocab(task, preprocessing)
    model = model.to("cpu").eval()
    head = task.export_head(model).to("cpu").eval()
    with torch.no_grad():
        sample = head(
            random_input(1, tuple(input_shape), torch.Generator().manual_seed(0), vocab=vocab)
        )
    output: dict[str, Any] = {"kind": task.output_kind, "shape": [-1, *sample.shape[1:]]}
    if task.name == "classification":
        output["num_classes"] = len(targets.names)
    elif vocab is not None:
        output["vocab_size"] = vocab
    with atomic_dir(out, replace=True) as tmp:
        save_weights(model, tmp / WEIGHTS)
        onnx_record = (
            export_onnx(head, tmp / ONNX_FILE, tuple(input_shape), onnx_tolerance, vocab=vocab)
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
            "task": {
                "name": task.name,
                "targets": targets.to_json(),
                **(
                    {"factory": task_factory.name, "path": task_factory.path}
                    if task_factory is not None and ":" in task_factory.name
                    else {}
                ),
            },
            "input": {"shape": list(input_shape), "dtype": preprocessing.input_dtype},
            "preprocessing": preprocessing.to_json(),
            "output": output,
            "class_names": list(targets.names),
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
    """Rebuild the model from model.json and load its safetensors weights (never unpickles);
    the bundle's model is the task's exported model over them, in eval mode."""
    root = Path(root)
    spec = read_bundle_spec(root)
    task = task_of(spec)
    section = ModelSection.model_validate(spec["architecture"])
    bare = build_model(section, spec["input"]["shape"], task.output_size())
    load_weights(bare, root / WEIGHTS)
    model = task.export_head(bare).to(device).eval()
    return LoadedBundle(root=root.resolve(), spec=spec, model=model, task=task)


def publish_bundle(bundle: Path, url: str, options: Mapping[str, Any] | None = None) -> str:
    """Upload the finished bundle folder `bundle` to `url` (replacing a bundle there): the
    old model.sig and model.json go first, then files the new bundle does not have, then
    the new files, model.json and model.sig last. Returns the printable URL."""
    store = Store(url, options)
    names = sorted(p.name for p in Path(bundle).iterdir() if p.is_file())
    names.sort(key=lambda n: {MODEL_JSON: 1, SIGNATURE: 2}.get(n, 0))
    for old in (SIGNATURE, MODEL_JSON, *sorted(set(store.list()) - set(names))):
        store.delete(old)
    upload_files(Path(bundle), store, names)
    return store.url()


def fetch_bundle(url: str, options: Mapping[str, Any] | None = None) -> Path:
    """The bundle at `url` as a folder of this node's cache (fetched whole, then moved into
    place); open_bundle then checks it exactly as a local bundle (every file's sha256, and
    the signature when a public key is given)."""
    store = Store(url, options)
    if not store.exists(MODEL_JSON):
        raise UserError(f"{redact(url)}: not a bundle (no {MODEL_JSON})")
    dest = node_local("bundles", url)
    with atomic_dir(dest, replace=True) as tmp:
        download_tree(store, "", tmp)
    return dest
