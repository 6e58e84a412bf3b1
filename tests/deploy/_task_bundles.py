"""Small bundles of every task, built directly (random init, nothing trained), and data sets
to predict over."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepfleet.config import ModelSection
from deepfleet.data import Preprocessing, Samples, write_dataset
from deepfleet.data._text import train_tokenizer
from deepfleet.deploy import export_bundle
from deepfleet.models import gpt, mlp
from deepfleet.tasks import CausalLMTask, MultilabelTask, RegressionTask, Targets

CONTEXT = 16
GPT_PARAMS = {"dim": 32, "layers": 2, "heads": 2}
TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine, and a penny saved is a penny earned",
    "all that glitters is not gold; fortune favours the bold",
    "deepfleet serves models and writes bundles: ünïcödé too ✓",
] * 4
REGRESSION_STATS = {"mean": [10.0, -5.0], "std": [2.0, 3.0]}


def tokenizer_file(folder: Path) -> Path:
    """A byte-level BPE tokenizer trained here on a few lines."""
    tokenizer = train_tokenizer(iter(TEXT), vocab_size=300)
    path = Path(folder) / "tokenizer.json"
    path.write_text(tokenizer.to_str(), encoding="utf-8")
    return path


def lm_task(vocab: int) -> CausalLMTask:
    return CausalLMTask(Targets("int32", (CONTEXT,), [], {"vocab_size": vocab}))


def lm_bundle(out: Path, tokenizer: Path | None, *, vocab: int, onnx: bool = True, seed=0):
    torch.manual_seed(seed)
    return export_bundle(
        gpt((CONTEXT,), vocab, **GPT_PARAMS),
        out,
        name="lm",
        model_section=ModelSection(name="gpt", params=GPT_PARAMS),
        input_shape=(CONTEXT,),
        class_names=[],
        task=lm_task(vocab),
        extra_files={"tokenizer.json": tokenizer} if tokenizer else None,
        onnx=onnx,
        preprocessing=Preprocessing.for_samples("int32", 1.0, (CONTEXT,), tokens=True),
    )


def regression_task() -> RegressionTask:
    return RegressionTask(Targets("float32", (2,), ["height", "weight"], dict(REGRESSION_STATS)))


def regression_bundle(out: Path, onnx: bool = True) -> Path:
    torch.manual_seed(0)
    task = regression_task()
    return export_bundle(
        mlp((4,), 2, hidden=[8]),
        out,
        name="reg",
        model_section=ModelSection(name="mlp", params={"hidden": [8]}),
        input_shape=(4,),
        class_names=task.targets.names,
        task=task,
        onnx=onnx,
    )


def multilabel_task() -> MultilabelTask:
    return MultilabelTask(Targets("uint8", (3,), ["red", "green", "blue"], {}))


def multilabel_bundle(out: Path, onnx: bool = True) -> Path:
    torch.manual_seed(0)
    task = multilabel_task()
    return export_bundle(
        mlp((4,), 3, hidden=[8]),
        out,
        name="tags",
        model_section=ModelSection(name="mlp", params={"hidden": [8]}),
        input_shape=(4,),
        class_names=task.targets.names,
        task=task,
        onnx=onnx,
    )


def table_data(out: Path, task: str, rows: int = 40) -> Path:
    """4 float features per row; regression: two float targets; multilabel: 3 labels."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    if task == "regression":
        y = rng.normal(size=(rows, 2)).astype(np.float32)
        names = ["height", "weight"]
    else:
        y = rng.integers(0, 2, size=(rows, 3)).astype(np.uint8)
        names = ["red", "green", "blue"]
    samples = Samples(x=x, y=y, class_names=names, description=f"{task} table")
    write_dataset(
        samples,
        out,
        shards=2,
        val_fraction=0.2,
        test_fraction=0.2,
        seed=0,
        task=task,
        stratify=False,
    )
    return out


def token_data(out: Path, tokenizer: Path, vocab: int, rows: int = 24) -> Path:
    rng = np.random.default_rng(0)
    stream = rng.integers(0, vocab, size=(rows, CONTEXT + 1)).astype(np.int32)
    samples = Samples(
        x=stream[:, :-1],
        y=stream[:, 1:],
        class_names=[],
        description="tokens",
        tokens=True,
        target_stats={"vocab_size": vocab},
        extra_files={"tokenizer.json": tokenizer.read_bytes()},
    )
    write_dataset(
        samples,
        out,
        shards=2,
        val_fraction=0.2,
        test_fraction=0.2,
        seed=0,
        task="causal_lm",
        stratify=False,
    )
    return out
