"""Bundles per task: model.json records the task and its output, the weights stay the bare
model's, ONNX is the task's exported model (token ids in for a language model), and
load_bundle gives the task back with the exported model."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from _task_bundles import (
    CONTEXT,
    REGRESSION_STATS,
    lm_bundle,
    multilabel_bundle,
    regression_bundle,
    tokenizer_file,
)
from safetensors.torch import load_file

from deepfleet.config import ModelSection
from deepfleet.deploy import MODEL_JSON, WEIGHTS, export_bundle, load_bundle
from deepfleet.errors import UserError
from deepfleet.models import mlp


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tokenizer_file(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def vocab(tokenizer):
    from deepfleet.data._text import load_tokenizer

    return load_tokenizer(tokenizer).get_vocab_size()


def test_classification_by_default_records_today_output_and_the_task(tmp_path):
    out = export_bundle(
        mlp((4,), 3),
        tmp_path / "b",
        name="m",
        model_section=ModelSection(name="mlp"),
        input_shape=(4,),
        class_names=["a", "b", "c"],
        onnx=False,
    )
    spec = json.loads((out / MODEL_JSON).read_text())
    assert spec["task"] == {
        "name": "classification",
        "targets": {"dtype": "int64", "shape": [], "names": ["a", "b", "c"], "stats": {}},
    }
    assert spec["output"] == {"kind": "logits", "num_classes": 3, "shape": [-1, 3]}
    assert spec["input"] == {"shape": [4], "dtype": "float32"}
    assert spec["class_names"] == ["a", "b", "c"]
    bundle = load_bundle(out)
    assert bundle.task.name == "classification" and bundle.task.targets.names == ["a", "b", "c"]
    assert bundle.vocab_size is None and bundle.tokenizer is None


def test_a_bundle_without_a_task_record_is_classification_over_its_class_names(tmp_path):
    out = export_bundle(
        mlp((4,), 3),
        tmp_path / "b",
        name="m",
        model_section=ModelSection(name="mlp"),
        input_shape=(4,),
        class_names=["a", "b", "c"],
        onnx=False,
    )
    spec = json.loads((out / MODEL_JSON).read_text())
    del spec["task"]
    spec["output"] = {"kind": "logits", "num_classes": 3}
    (out / MODEL_JSON).write_text(json.dumps(spec))
    bundle = load_bundle(out)
    assert bundle.task.name == "classification" and bundle.class_names == ["a", "b", "c"]
    assert bundle.output_shape is None
    assert bundle.model(torch.zeros(2, 4)).shape == (2, 3)


def test_regression_answers_in_target_units_in_torch_and_onnx(tmp_path):
    out = regression_bundle(tmp_path / "reg")
    spec = json.loads((out / MODEL_JSON).read_text())
    assert spec["task"]["name"] == "regression"
    assert spec["task"]["targets"]["stats"] == REGRESSION_STATS
    assert spec["output"] == {"kind": "values", "shape": [-1, 2]}
    bundle = load_bundle(out)
    # the weights are the bare model's: no head buffers, the same keys as the model
    assert set(load_file(str(out / WEIGHTS))) == set(mlp((4,), 2, hidden=[8]).state_dict())
    bare = mlp((4,), 2, hidden=[8])
    bare.load_state_dict(load_file(str(out / WEIGHTS)))
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = bare.eval()(x) * torch.tensor([2.0, 3.0]) + torch.tensor([10.0, -5.0])
        np.testing.assert_allclose(bundle.model(x).numpy(), expected.numpy(), atol=1e-5)
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    columns = bundle.task.columns(got)
    assert set(columns) == {"value_height", "value_weight"}


def test_multilabel_bundle(tmp_path):
    bundle = load_bundle(multilabel_bundle(tmp_path / "ml", onnx=False))
    assert bundle.task.name == "multilabel" and bundle.class_names == ["red", "green", "blue"]
    assert bundle.spec["output"] == {"kind": "logits", "shape": [-1, 3]}


def test_causal_lm_bundle_takes_token_ids_and_carries_its_tokenizer(tmp_path, tokenizer, vocab):
    out = lm_bundle(tmp_path / "lm", tokenizer, vocab=vocab)
    spec = json.loads((out / MODEL_JSON).read_text())
    assert spec["input"] == {"shape": [CONTEXT], "dtype": "int64"}
    assert spec["output"] == {
        "kind": "token_logits",
        "shape": [-1, CONTEXT, vocab],
        "vocab_size": vocab,
    }
    assert spec["preprocessing"]["layout"] == "tokens"
    assert "tokenizer.json" in spec["files"]
    assert spec["onnx"]["max_abs_diff"] <= spec["onnx"]["tolerance"]
    bundle = load_bundle(out)
    assert bundle.task.name == "causal_lm" and bundle.vocab_size == vocab
    assert bundle.input_dtype == "int64" and bundle.output_shape == (CONTEXT, vocab)
    assert bundle.tokenizer.decode(bundle.tokenizer.encode("the fox").ids) == "the fox"
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(int64)"
    ids = np.random.default_rng(0).integers(0, vocab, size=(3, CONTEXT))
    with torch.no_grad():
        expected = bundle.model(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(session.run(None, {"input": ids})[0], expected, atol=1e-4)


def test_a_changed_tokenizer_is_refused(tmp_path, tokenizer, vocab):
    out = lm_bundle(tmp_path / "lm", tokenizer, vocab=vocab, onnx=False)
    bundle = load_bundle(out)
    (out / "tokenizer.json").write_text("{}")
    with pytest.raises(UserError, match="tokenizer.json does not match"):
        _ = bundle.tokenizer


def test_token_inputs_need_a_vocabulary(tmp_path):
    from deepfleet.data import Preprocessing
    from deepfleet.tasks import CausalLMTask, Targets

    with pytest.raises(UserError, match="vocab_size"):
        export_bundle(
            mlp((4,), 3),
            tmp_path / "b",
            name="m",
            model_section=ModelSection(name="mlp"),
            input_shape=(4,),
            class_names=[],
            task=CausalLMTask(Targets("int32", (4,), [], {})),
            preprocessing=Preprocessing.for_samples("int32", 1.0, (4,), tokens=True),
        )
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"name": "nonsense"}, "unknown task"),
        ({"targets": None}, "targets cannot be read"),
        ({"name": None}, "not an object with a name"),
    ],
)
def test_a_bad_task_record_is_one_clear_error(tmp_path, change, message):
    out = regression_bundle(tmp_path / "reg", onnx=False)
    spec = json.loads((out / MODEL_JSON).read_text())
    spec["task"].update(change)
    (out / MODEL_JSON).write_text(json.dumps(spec))
    with pytest.raises(UserError, match=message):
        load_bundle(out)
