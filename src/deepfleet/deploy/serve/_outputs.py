"""What the server answers, by the bundle's task: the output tensors of the OIP v2 infer
route (named in the model metadata) and the per-sample answers of /predict.

classification  logits, probabilities (softmax), label                       (as always)
multilabel      logits, probabilities (sigmoid), labels (0/1 per label)
regression      values, in the targets' units
causal_lm       next_token (the most likely next token id); next_token_logits [V] on request
another task    outputs, the exported model's outputs as they are

The full next-token logits of a causal LM ([T, V] per sample) are never sent whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy._predict import output_columns
from deepfleet.tasks import sigmoid, softmax
from deepfleet.tasks._multilabel import THRESHOLD


@dataclass(frozen=True)
class Output:
    """One output tensor: its OIP name, datatype, shape ([-1, ...]) and how it is computed
    from the exported model's outputs; `default` outputs are sent when none are named."""

    name: str
    datatype: str
    shape: list[int]
    compute: Callable[[np.ndarray], np.ndarray]
    default: bool = True

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


def _last(outputs: np.ndarray) -> np.ndarray:
    return outputs[:, -1]


def outputs_of(bundle: LoadedBundle) -> dict[str, Output]:
    """The output tensors the server offers for `bundle`, by name, in metadata order."""
    task = bundle.task.name
    shape = list(bundle.output_shape or (len(bundle.class_names),))
    if task == "classification":
        found = [
            Output("logits", "FP32", [-1, *shape], lambda o: o),
            Output("probabilities", "FP32", [-1, *shape], lambda o: softmax(o)),
            Output("label", "INT64", [-1], lambda o: o.argmax(axis=1).astype(np.int64)),
        ]
    elif task == "multilabel":
        found = [
            Output("logits", "FP32", [-1, *shape], lambda o: o),
            Output("probabilities", "FP32", [-1, *shape], lambda o: sigmoid(o)),
            Output(
                "labels", "INT8", [-1, *shape], lambda o: (sigmoid(o) >= THRESHOLD).astype(np.int8)
            ),
        ]
    elif task == "regression":
        found = [Output("values", "FP32", [-1, *shape], lambda o: o)]
    elif task == "causal_lm":
        found = [
            Output(
                "next_token", "INT64", [-1], lambda o: _last(o).argmax(axis=-1).astype(np.int64)
            ),
            Output("next_token_logits", "FP32", [-1, shape[-1]], _last, default=False),
        ]
    else:
        found = [Output("outputs", "FP32", [-1, *shape], lambda o: o)]
    return {o.name: o for o in found}


def infer_outputs(
    outputs: np.ndarray, wanted: list[str], offered: dict[str, Output]
) -> list[dict[str, Any]]:
    """The OIP output tensors named in `wanted`."""
    tensors = []
    for name in wanted:
        out = offered[name]
        value = np.asarray(out.compute(outputs))
        if out.datatype == "FP32":
            value = value.astype(np.float32)
        tensors.append(
            {
                "name": name,
                "datatype": out.datatype,
                "shape": list(value.shape),
                "data": value.ravel().tolist(),
            }
        )
    return tensors


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def predictions(bundle: LoadedBundle, outputs: np.ndarray) -> list[dict[str, Any]]:
    """/predict's answer per sample for a task other than classification: the task's named
    values (multilabel: also `labels`, the names of the labels predicted)."""
    columns = output_columns(bundle, outputs)
    rows = [
        {name: _plain(values[i]) for name, values in columns.items()} for i in range(len(outputs))
    ]
    if bundle.task.name == "multilabel":
        names = bundle.class_names
        for row in rows:
            row["labels"] = [n for n in names if row.get(f"label_{n}") == 1]
    return rows
