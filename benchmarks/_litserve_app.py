"""LitServe serving a deepfleet bundle's model.onnx: the reference server of serve.py.

Runs under the separate LitServe virtual environment (never the project's):
    python _litserve_app.py BUNDLE PORT MAX_BATCH_SIZE
It answers POST /predict with the same body and answer as `deepfleet serve`'s /predict, on the
same onnxruntime graph, so the two servers differ only in how they serve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import litserve as ls
import numpy as np
import onnxruntime as ort


class OnnxAPI(ls.LitAPI):
    def __init__(self, bundle: Path, **kwargs):
        super().__init__(**kwargs)
        self.bundle = bundle

    def setup(self, device):
        spec = json.loads((self.bundle / "model.json").read_text())
        self.shape = spec["input"]["shape"]
        self.class_names = spec["class_names"]
        self.name = spec["name"]
        self.session = ort.InferenceSession(
            str(self.bundle / "model.onnx"), providers=["CPUExecutionProvider"]
        )

    def decode_request(self, request):
        return np.asarray(request["instances"], dtype=np.float32).reshape(-1, *self.shape)

    def batch(self, inputs):
        return np.concatenate(inputs)

    def predict(self, x):
        return self.session.run(["logits"], {"input": x})[0]

    def unbatch(self, output):
        return [row[None] for row in output]

    def encode_response(self, logits):
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        labels = probs.argmax(axis=1)
        return {
            "model_name": self.name,
            "predictions": [
                {
                    "label": int(k),
                    "label_name": self.class_names[k],
                    "confidence": float(p[k]),
                    "probabilities": p.tolist(),
                }
                for k, p in zip(labels, probs, strict=True)
            ],
        }


if __name__ == "__main__":
    bundle, port, max_batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    batching = {"max_batch_size": max_batch, "batch_timeout": 0.002} if max_batch > 1 else {}
    server = ls.LitServer(OnnxAPI(bundle, **batching), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
