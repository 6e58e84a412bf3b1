"""prepare and verify-data: byte-identical shards, content-addressed names, atomic writes,
tamper detection (verify-data names the shard; training refuses)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import REPO, run_deepfleet, tiny_job_dict
from deepfleet.config import DataSection, job_from_dict
from deepfleet.data import (
    Samples,
    ShardStream,
    load_source,
    prepare_from_config,
    read_manifest,
    read_split,
    verify_dataset,
    write_dataset,
)
from deepfleet.data import _writer as writer
from deepfleet.errors import UserError
from deepfleet.jobs import stage_prepare, stage_train
from deepfleet.runs import create_run


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_prepare_twice_gives_identical_bytes_whatever_the_pool(tmp_path):
    digits = load_source("digits")
    runs = {}
    for name, workers in (("a", 2), ("b", 2), ("serial", 1)):
        write_dataset(
            digits,
            tmp_path / name,
            shards=4,
            val_fraction=0.1,
            test_fraction=0.2,
            seed=3,
            workers=workers,
            source={"name": "digits"},
        )
        runs[name] = folder_bytes(tmp_path / name)
    assert runs["a"] == runs["b"] == runs["serial"]
    assert len(runs["a"]) == 1 + 4 + 1 + 1  # manifest, 4 train, val, test
    other_seed = tmp_path / "c"
    write_dataset(
        digits,
        other_seed,
        shards=4,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=4,
        source={"name": "digits"},
    )
    assert folder_bytes(other_seed) != runs["a"]


@pytest.mark.e2e
def test_cli_prepare_matches_the_library_byte_for_byte(tmp_path):
    done = run_deepfleet(
        "prepare",
        "digits",
        "--out",
        str(tmp_path / "cli"),
        "--shards",
        "3",
        "--seed",
        "5",
        "--workers",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "train 1257" in done.stdout
    table = " ".join(done.stdout.split())  # the summary table: samples, shards, bytes a split
    assert "│ train │ 1,257 │ 3 │" in table and "│ all │ 1,797 │ 5 │" in table, table
    prepare_from_config(DataSection(source="digits", shards=3, workers=1), tmp_path / "lib", 5)
    assert folder_bytes(tmp_path / "cli") == folder_bytes(tmp_path / "lib")


def test_manifest_names_rows_histogram_and_split_membership(digits_data):
    manifest = read_manifest(digits_data)
    raw = json.loads((digits_data / "manifest.json").read_text())
    digits = load_source("digits")
    all_ids = []
    for split in manifest.splits:
        data = read_split(manifest, split)
        all_ids += data.ids.tolist()
        hist = np.bincount(data.y.numpy(), minlength=10).tolist()
        assert raw["splits"][split]["class_histogram"] == hist
        assert manifest.rows(split) == len(data) == sum(e.rows for e in manifest.shards(split))
        # stratified: every class keeps (about) its share in every split
        share = np.bincount(digits.y, minlength=10) / len(digits.y)
        assert np.abs(np.array(hist) / len(data) - share).max() < 0.03
        for entry in manifest.shards(split):
            blob = (digits_data / entry.file).read_bytes()
            digest = hashlib.sha256(blob).hexdigest()
            assert entry.sha256 == digest
            assert entry.file == f"{split}-{entry.file.split('-')[1]}-{digest[:12]}.parquet"
    assert sorted(all_ids) == list(range(len(digits.y)))  # the splits partition the data
    assert raw["features"] == {"dtype": "uint8", "shape": [1, 8, 8], "scale": 1 / 16}
    assert raw["schema"]["x"] == "fixed_size_binary[64]: one uint8 tensor [1, 8, 8], row-major"
    field = pq.read_schema(digits_data / manifest.shards("train")[0].file).field("x")
    assert field.metadata[b"deepfleet.dtype"] == b"u1"
    assert field.metadata[b"deepfleet.shape"] == b"[1, 8, 8]"
    assert raw["deepfleet_version"] and raw["source"]["description"]


def test_row_groups_are_sized_for_streaming(tmp_path):
    x = np.zeros((8000, 28, 28), np.uint8)
    samples = Samples(
        x=x, y=np.arange(8000) % 10, class_names=list("0123456789"), description="zeros"
    )
    write_dataset(samples, tmp_path / "d", shards=1, val_fraction=0, test_fraction=0, seed=0)
    (entry,) = read_manifest(tmp_path / "d").shards("train")
    meta = pq.read_metadata(tmp_path / "d" / entry.file)
    rows = writer.row_group_rows(28 * 28)
    assert rows == (4 << 20) // 784
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [rows, 8000 - rows]


def test_interrupted_prepare_leaves_no_output_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    """An interrupted prepare leaves no `out` (nothing that looks complete), only its
    staging folder with the finished shards; run again it writes only the rest and ends
    with the bytes of an uninterrupted run."""
    real = writer.write_shard
    calls = []
    resumed = False

    def dies_on_third_shard(*args):
        calls.append(args[1:3])
        if len(calls) == 3 and not resumed:
            raise KeyboardInterrupt
        return real(*args)

    options = dict(shards=4, val_fraction=0.1, test_fraction=0.2, seed=0, workers=1)
    write_dataset(load_source("digits"), tmp_path / "whole", **options)
    monkeypatch.setattr(writer, "write_shard", dies_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(load_source("digits"), tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()
    stage = tmp_path / ".out.partial"
    assert sorted(p.name[:11] for p in stage.glob("*.parquet")) == ["train-00000", "train-00001"]
    assert not (stage / "manifest.json").exists() and not list(stage.glob(".*.tmp"))
    calls.clear()
    resumed = True
    write_dataset(load_source("digits"), tmp_path / "out", **options)
    assert ("train", 0) not in calls and ("train", 1) not in calls  # kept, not rewritten
    assert len(calls) == 4  # train 2 and 3, val, test
    assert folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "whole")
    assert not stage.exists()


def test_refuses_a_non_empty_output_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        write_dataset(
            load_source("digits"),
            tmp_path / "out",
            shards=2,
            val_fraction=0.1,
            test_fraction=0.2,
            seed=0,
        )
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.e2e
def test_tampered_shard_is_named_and_training_refuses(tmp_path):
    job = job_from_dict(tiny_job_dict(tmp_path))
    paths = create_run(job)
    manifest = stage_prepare(paths, job)
    victim = manifest.shards("train")[1].file
    flip_byte(paths.shards / victim)
    done = run_deepfleet("verify-data", str(paths.shards))
    assert done.returncode == 2
    message = " ".join(done.stderr.split())  # the console may wrap long lines
    assert message == f"error: shard {victim} does not match its sha256 in the manifest"
    with pytest.raises(UserError, match=f"shard {victim} does not match"):
        verify_dataset(paths.shards)
    with pytest.raises(UserError, match=victim):
        stage_train(paths)
    assert not (paths.checkpoints / "last.safetensors").exists()
    with pytest.raises(UserError, match=victim):  # refused when the stream reads it
        for _ in ShardStream(paths.shards, batch_size=8):
            pass
    (paths.shards / victim).unlink()
    with pytest.raises(UserError, match=f"shard {victim} is missing"):
        verify_dataset(paths.shards)


def test_progress_reports_every_row_and_the_feature_bytes(tmp_path):
    calls = []
    digits = load_source("digits")
    write_dataset(
        digits,
        tmp_path / "out",
        shards=3,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
        workers=2,
        progress=lambda rows, data, total: calls.append((rows, data, total)),
    )
    assert calls[-1] == (1797, 1797 * 64, 1797)  # 8x8 uint8 pixels a sample
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)  # never goes back


def test_verify_data_imports_neither_torch_nor_the_readers(digits_data):
    """verify-data's start-up: the package imports its names on first use."""
    code = (
        "import sys, deepfleet.cli, deepfleet.data as d;"
        f"d.verify_dataset({str(digits_data)!r});"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
