"""Model repositories for the serving tests: small digits classifiers, trained for a few
dozen steps (seconds), exported as bundles into REPO/<model>/<version>/, and the answers
each bundle gives on its own (onnxruntime in this process) to compare the server with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from deepfleet.config import ModelSection
from deepfleet.data import read_manifest, read_split
from deepfleet.deploy import export_bundle, load_bundle
from deepfleet.deploy._backends import make_backend
from deepfleet.models import mlp

# Bundles already exported in this test session, by (data, seed, hidden): the test modules
# share them (a copy is cheaper than an ONNX export).
_EXPORTED: dict[tuple, Path] = {}


def digits_classifier(out: Path, data_dir: Path, *, seed: int, hidden: list[int]) -> Path:
    """An MLP trained for 60 Adam steps on the digits train split, exported to `out`."""
    key = (str(data_dir), seed, tuple(hidden))
    if key in _EXPORTED and _EXPORTED[key].is_dir():
        shutil.copytree(_EXPORTED[key], out)
        return out
    _EXPORTED[key] = _export(out, data_dir, seed, hidden)
    return out


def _export(out: Path, data_dir: Path, seed: int, hidden: list[int]) -> Path:
    manifest = read_manifest(data_dir)
    train = read_split(manifest, "train")
    torch.manual_seed(seed)
    params = {"hidden": hidden, "dropout": 0.0}
    model = mlp(manifest.sample_shape, len(manifest.targets.names), **params)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    draw = torch.Generator().manual_seed(seed)
    for _ in range(60):
        rows = torch.randint(len(train.x), (64,), generator=draw)
        loss = F.cross_entropy(model(train.x[rows]), train.y[rows].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return export_bundle(
        model.eval(),
        out,
        name=f"digits-{seed}",
        model_section=ModelSection(name="mlp", params=params),
        input_shape=manifest.sample_shape,
        class_names=manifest.targets.names,
        preprocessing=manifest.preprocessing,
    )


def place_version(bundle: Path, repo: Path, model: str, version: int) -> Path:
    """Copy a bundle in as REPO/model/version the way a deployment should: under a hidden
    name first, then renamed into place, so no poll ever sees half a version."""
    final = repo / model / str(version)
    hidden = repo / model / f".{version}.incoming"
    shutil.copytree(bundle, hidden)
    hidden.rename(final)
    return final


def own_logits(bundle: Path, x: np.ndarray) -> np.ndarray:
    """The bundle's logits for model input `x`, computed here, not by the server."""
    return make_backend(load_bundle(bundle), "onnxruntime")(x)
