"""Batch prediction over a folder of image files: every file at any depth, keyed by its
path, decoded by the bundle's recorded evaluation transform; the probabilities equal the
bundle's model on the bundle's own preprocessing of the same bytes (computed here by hand),
resumable part by part, and a user's mistake is one line."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from _deploy_helpers import image_bundle
from PIL import Image

import deepfleet.deploy._predict_files as predict_files_module
from conftest import run_deepfleet
from deepfleet.cli import run_cli
from deepfleet.deploy import load_bundle, predict_files
from deepfleet.deploy._predict import PARTS
from deepfleet.errors import UserError

NAMES = ["a/one.jpg", "a/two.PNG", "b/deep/three.webp", "b/four.jpeg", "five.png"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return image_bundle(tmp_path_factory.mktemp("img"))


def _image(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(20, 90, 2))
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    pixels[: h // 2] //= 4  # structure, so the crop matters
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}
    for k, name in enumerate(NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_image(k, formats[path.suffix.lower()]))
    (root / ".cache").mkdir()
    (root / ".cache" / "hidden.jpg").write_bytes(_image(9, "JPEG"))
    (root / "notes.txt").write_text("not an image")
    return root


def _expected_probs(bundle, folder, names) -> np.ndarray:
    """The bundle's model, by hand, on its preprocessing of the files' bytes."""
    loaded = load_bundle(bundle)
    blobs = np.array([(folder / n).read_bytes() for n in names], dtype=object)
    x = torch.from_numpy(loaded.preprocessing.apply(blobs))
    with torch.no_grad():
        return torch.softmax(loaded.model(x), dim=1).numpy()


def _read(out, result) -> tuple[list[str], np.ndarray]:
    paths, probs = [], []
    for entry in result["files"]:
        table = pq.read_table(out / entry["file"])
        paths += table.column("path").to_pylist()
        probs.append(np.stack([table.column(f"prob_{c}").to_numpy() for c in "abc"], axis=1))
    return paths, np.concatenate(probs)


def test_every_image_file_is_predicted_by_its_path(bundle, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_files_module, "FILES_PER_PART", 2)
    out = tmp_path / "out"
    result = predict_files(load_bundle(bundle), folder, out, backend="torch", batch_size=3)
    expected_names = sorted(NAMES)  # hidden folders and other files skipped
    paths, probs = _read(out, result)
    assert paths == expected_names and result["rows"] == 5 and len(result["files"]) == 3
    np.testing.assert_allclose(probs, _expected_probs(bundle, folder, paths), atol=1e-5)
    # onnxruntime, through the command line, gives the same classes
    assert run_cli(["predict", str(bundle), str(folder), "--out", str(tmp_path / "ort")]) == 0
    ort = json.loads((tmp_path / "ort" / "manifest.json").read_text())
    ort_paths, ort_probs = _read(tmp_path / "ort", ort)
    assert ort_paths == expected_names and ort["backend"] == "onnxruntime"
    np.testing.assert_allclose(ort_probs, probs, atol=1e-4)


def test_a_rerun_predicts_only_the_parts_whose_files_changed(bundle, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(predict_files_module, "FILES_PER_PART", 2)
    loaded, out = load_bundle(bundle), tmp_path / "out"
    first = predict_files(loaded, folder, out, backend="torch")
    outputs = {e["file"]: (out / e["file"]).stat().st_mtime_ns for e in first["files"]}
    again = predict_files(loaded, folder, out, backend="torch")
    assert again["skipped"] == 3 and again["files"] == first["files"]
    assert {f: (out / f).stat().st_mtime_ns for f in outputs} == outputs
    (folder / "five.png").write_bytes(_image(42, "PNG"))  # sorted: the third file, part 1
    changed = predict_files(loaded, folder, out, backend="torch")
    assert changed["skipped"] == 2
    paths, probs = _read(out, changed)
    np.testing.assert_allclose(probs, _expected_probs(bundle, folder, paths), atol=1e-5)
    assert (out / PARTS).is_dir() and (out / "manifest.json").is_file()


def test_mistakes_are_one_line(bundle, folder, tmp_path, trained_run):
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"junk" * 20)
    with pytest.raises(UserError, match=r"broken\.jpg: not a decodable image"):
        predict_files(load_bundle(bundle), folder, tmp_path / "out", backend="torch")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no image files"):
        predict_files(load_bundle(bundle), empty, tmp_path / "out2")
    # a bundle trained on prepared samples (digits) takes no image files
    done = run_deepfleet("predict", str(trained_run.bundle), str(folder), "--out", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "needs a bundle trained on encoded images" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = run_deepfleet("predict", str(bundle), str(folder), "--nproc", "2")
    assert done.returncode == 2 and "apply to prepared data sets" in done.stderr
