"""Batch prediction per task: id plus the task's columns (classification exactly as before),
the same from torch and onnxruntime; a language model also decodes its next token."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _task_bundles import (
    lm_bundle,
    multilabel_bundle,
    regression_bundle,
    table_data,
    token_data,
    tokenizer_file,
)

from deepfleet.config import ModelSection
from deepfleet.data import Samples, read_split, write_dataset
from deepfleet.data._text import load_tokenizer
from deepfleet.deploy import export_bundle, load_bundle, predict_dataset
from deepfleet.errors import UserError
from deepfleet.models import mlp


def _table(out, result) -> pa.Table:
    return pa.concat_tables([pq.read_table(out / f["file"]) for f in result["files"]])


def _by_id(table: pa.Table, column: str) -> dict[int, object]:
    return dict(zip(table.column("id").to_pylist(), table.column(column).to_pylist(), strict=True))


def test_classification_keeps_its_columns_and_types(tmp_path):
    rng = np.random.default_rng(0)
    samples = Samples(
        x=rng.normal(size=(30, 4)).astype(np.float32),
        y=np.arange(30) % 3,
        class_names=["a", "b", "c"],
        description="three classes",
    )
    data = tmp_path / "data"
    write_dataset(samples, data, shards=1, val_fraction=0.2, test_fraction=0.2, seed=0)
    bundle = load_bundle(
        export_bundle(
            mlp((4,), 3),
            tmp_path / "b",
            name="m",
            model_section=ModelSection(name="mlp"),
            input_shape=(4,),
            class_names=["a", "b", "c"],
            onnx=False,
        )
    )
    result = predict_dataset(bundle, data, tmp_path / "p", splits=["test"], backend="torch")
    table = _table(tmp_path / "p", result)
    assert table.schema.names == [
        "id",
        "label",
        "label_name",
        "confidence",
        "prob_a",
        "prob_b",
        "prob_c",
    ]
    types = [str(t) for t in table.schema.types]
    assert types == ["int64", "int64", "string", "float", "float", "float", "float"]
    probs = np.stack([table.column(f"prob_{n}").to_numpy() for n in "abc"], 1)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert table.column("label").to_pylist() == probs.argmax(1).tolist()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_regression_predictions_are_in_target_units(tmp_path, backend):
    data = table_data(tmp_path / "data", "regression")
    bundle = load_bundle(regression_bundle(tmp_path / "b"))
    result = predict_dataset(bundle, data, tmp_path / "p", splits=["test"], backend=backend)
    table = _table(tmp_path / "p", result)
    assert table.schema.names == ["id", "value_height", "value_weight"]
    assert [str(t) for t in table.schema.types] == ["int64", "float", "float"]
    split = read_split(data, "test")
    with torch.no_grad():
        expected = bundle.model(split.x).numpy()
    got = _by_id(table, "value_height")
    for i, row in zip(split.ids.tolist(), expected, strict=True):
        assert got[i] == pytest.approx(float(row[0]), abs=1e-4)
    # in the targets' units: around the recorded mean 10, not the standardised 0
    assert np.mean(list(got.values())) > 5


def test_multilabel_predictions(tmp_path):
    data = table_data(tmp_path / "data", "multilabel")
    bundle = load_bundle(multilabel_bundle(tmp_path / "b", onnx=False))
    result = predict_dataset(bundle, data, tmp_path / "p", splits=["test"])
    table = _table(tmp_path / "p", result)
    names = ["red", "green", "blue"]
    assert table.schema.names == [
        "id",
        *[f"prob_{n}" for n in names],
        *[f"label_{n}" for n in names],
    ]
    probs = table.column("prob_red").to_numpy()
    assert ((probs >= 0.5).astype(np.int8) == table.column("label_red").to_numpy()).all()


def test_causal_lm_predicts_the_next_token_and_its_text(tmp_path):
    tokenizer = tokenizer_file(tmp_path)
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    data = token_data(tmp_path / "data", tokenizer, vocab)
    bundle = load_bundle(lm_bundle(tmp_path / "b", tokenizer, vocab=vocab))
    one = predict_dataset(bundle, data, tmp_path / "p", splits=["test"], backend="onnxruntime")
    table = _table(tmp_path / "p", one)
    assert table.schema.names == ["id", "next_token", "next_text"]
    split = read_split(data, "test")
    with torch.no_grad():
        expected = bundle.model(split.x.long())[:, -1].argmax(-1).tolist()
    got = _by_id(table, "next_token")
    assert [got[i] for i in split.ids.tolist()] == expected
    texts = _by_id(table, "next_text")
    decoder = load_tokenizer(tokenizer)
    assert all(texts[i] == decoder.decode([got[i]]) for i in got)
    two = predict_dataset(bundle, data, tmp_path / "q", splits=["test"], backend="torch")
    assert _by_id(_table(tmp_path / "q", two), "next_token") == got


def test_numeric_data_for_a_token_model_is_refused(tmp_path):
    tokenizer = tokenizer_file(tmp_path)
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    data = table_data(tmp_path / "data", "regression")
    bundle = load_bundle(lm_bundle(tmp_path / "b", tokenizer, vocab=vocab, onnx=False))
    with pytest.raises(UserError, match="token ids"):
        predict_dataset(bundle, data, tmp_path / "p")
