"""Encryption at rest: data keys, Parquet modular encryption round trip, wrong and missing keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import run_deepfleet, tiny_job_dict
from deepfleet.config import DataSection, job_from_dict
from deepfleet.data import (
    KEY_ENV,
    ShardStream,
    StreamLoader,
    load_data_key,
    new_data_key,
    prepare_from_config,
    read_manifest,
    read_split,
    verify_dataset,
)
from deepfleet.errors import UserError
from deepfleet.jobs import stage_evaluate, stage_prepare, stage_train
from deepfleet.runs import create_run


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory) -> tuple[Path, Path, Path]:
    """digits prepared twice with the same seed: plain, and encrypted under a new key."""
    base = tmp_path_factory.mktemp("crypto")
    key = new_data_key(base / "keys" / "data.key")
    prepare_from_config(DataSection(source="digits", shards=2), base / "plain", seed=0)
    prepare_from_config(DataSection(source="digits", shards=2, key=str(key)), base / "enc", seed=0)
    return base / "plain", base / "enc", key


def test_new_data_key_is_private_random_and_never_overwritten(tmp_path):
    path = new_data_key(tmp_path / "a.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert len(bytes.fromhex(text.strip())) == 32
    assert new_data_key(tmp_path / "b.key").read_text() != text
    with pytest.raises(UserError, match="already exists; a key file is never overwritten"):
        new_data_key(path)
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_key_sources_and_bad_keys(tmp_path, monkeypatch):
    path = new_data_key(tmp_path / "k")
    from_file = load_data_key(path)
    monkeypatch.setenv("MY_KEY", path.read_text().strip())
    assert load_data_key("env:MY_KEY").key_id == from_file.key_id
    monkeypatch.setenv(KEY_ENV, path.read_text().strip())
    assert load_data_key(None).key_id == from_file.key_id
    assert from_file.secret.hex() not in repr(from_file)
    with pytest.raises(UserError, match="environment variable NOPE is not set"):
        load_data_key("env:NOPE")
    os.chmod(path, 0o644)
    with pytest.raises(UserError, match="readable by other users; run chmod 600"):
        load_data_key(path)
    (tmp_path / "short").write_text("abcd\n")
    os.chmod(tmp_path / "short", 0o600)
    with pytest.raises(UserError, match="not a data key"):
        load_data_key(tmp_path / "short")


def test_round_trip_equals_the_plain_data_set(encrypted):
    plain, enc, key = encrypted
    manifest = read_manifest(enc)
    assert manifest.encryption["key_id"] == load_data_key(key).key_id
    assert manifest.encryption["algorithm"] == "AES_GCM_V1"
    assert key.read_text().strip() not in (enc / "manifest.json").read_text()
    verify_dataset(enc)  # checksums need no key
    for split in ("train", "val", "test"):
        a, b = read_split(plain, split), read_split(enc, split, key=key)
        assert torch.equal(a.ids, b.ids) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    # the streaming reader decrypts too, in worker processes, with the same batches as plain
    streams = [
        StreamLoader(ShardStream(d, batch_size=100, seed=1, key=k), num_workers=w)
        for d, k, w in ((plain, None, 0), (enc, key, 2))
    ]
    batches = [[(x.clone(), loader.last_ids.clone()) for x, _ in loader] for loader in streams]
    assert len(batches[0]) == len(batches[1]) == 13
    for (xa, ia), (xb, ib) in zip(*batches, strict=True):
        assert torch.equal(ia, ib) and torch.equal(xa, xb)


def test_shards_are_unreadable_without_decryption(encrypted):
    plain, enc, _ = encrypted
    entry = read_manifest(enc).shards("train")[0]
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(enc / entry.file)
    # the plain shard's footer names its columns in clear text; the encrypted one does not
    plain_bytes = (plain / read_manifest(plain).shards("train")[0].file).read_bytes()
    assert b"label" in plain_bytes
    assert b"label" not in (enc / entry.file).read_bytes()


def test_missing_and_wrong_keys_are_clear_and_yield_nothing(encrypted, tmp_path, monkeypatch):
    _, enc, _ = encrypted
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(UserError, match="the shards are encrypted; give the data key"):
        read_split(enc, "train")
    with pytest.raises(UserError, match="the shards are encrypted"):
        ShardStream(enc, batch_size=10)
    other = new_data_key(tmp_path / "other.key")
    with pytest.raises(UserError, match=r"wrong data key \(.*other.key is dfk-"):
        read_split(enc, "train", key=other)
    with pytest.raises(UserError, match="wrong data key"):
        ShardStream(enc, batch_size=10, key=other)
    # even past the fingerprint check, the AES-GCM unwrap fails cleanly, naming the shard
    from deepfleet.data import open_shard
    from deepfleet.data._crypto import DataKey

    manifest = read_manifest(enc)
    entry = manifest.shards("train")[0]
    with pytest.raises(UserError, match=f"shard {entry.file}: cannot be read"):
        open_shard(manifest, entry, DataKey(os.urandom(32), "forged")).read()


@pytest.mark.e2e
def test_keys_command_and_training_on_encrypted_shards(tmp_path, monkeypatch):
    done = run_deepfleet("keys", "new", "--out", str(tmp_path / "job.key"))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "job.key").stat().st_mode) == 0o600
    raw = tiny_job_dict(tmp_path, data={"key": str(tmp_path / "job.key")})
    raw["train"]["phases"] = [{"name": "a", "epochs": 1, "lr": 0.01}]
    job = job_from_dict(raw)
    paths = create_run(job)
    manifest = stage_prepare(paths, job)
    assert manifest.encryption is not None
    fit = stage_train(paths)
    assert fit.epochs == 1 and np.isfinite(fit.history[0]["train_loss"])
    assert fit.history[0]["train_accuracy"] > 0.3  # it learned from the decrypted pixels
    assert stage_evaluate(paths)["accuracy"] > 0.5


def test_batch_predict_in_two_processes_reads_encrypted_shards(encrypted, trained_run, tmp_path):
    """Every predict worker decrypts with the key; the outputs equal those of the plain data."""
    from deepfleet.deploy import load_bundle, predict_dataset

    plain, enc, key = encrypted
    bundle = load_bundle(trained_run.bundle)
    with pytest.raises(UserError, match="key"):
        predict_dataset(bundle, enc, tmp_path / "nokey", splits=["train"])
    a = predict_dataset(bundle, plain, tmp_path / "plain", splits=["train"])
    b = predict_dataset(bundle, enc, tmp_path / "enc", splits=["train"], nproc=2, key=key)
    assert b["nproc"] == 2 and a["rows"] == b["rows"] > 0
    for fa, fb in zip(a["files"], b["files"], strict=True):
        ta = pq.read_table(tmp_path / "plain" / fa["file"])
        tb = pq.read_table(tmp_path / "enc" / fb["file"])
        assert ta.column("id").equals(tb.column("id"))
        assert ta.column("label").equals(tb.column("label"))
