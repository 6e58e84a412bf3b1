"""Each shard is hashed as it is read, at most once per stage that reads it, and never by a
stage that reads no shard (no full hashing pass before every stage)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import deepfleet.data._manifest as manifest_module
from conftest import tiny_job_dict
from deepfleet import jobs
from deepfleet.config import job_from_dict
from deepfleet.data import read_manifest


def test_a_run_hashes_each_shard_once_per_stage_that_reads_it(tmp_path, monkeypatch):
    hashed: list[tuple[str, str]] = []
    stage = {"name": ""}
    real = manifest_module.sha256_file

    def counting(path, *args, **kwargs):
        if Path(path).suffix == ".parquet":  # shards (the manifest's own digest aside)
            hashed.append((stage["name"], Path(path).name))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(manifest_module, "sha256_file", counting)
    for name in ("stage_prepare", "stage_train", "stage_evaluate", "stage_export", "stage_predict"):
        original = getattr(jobs, name)

        def staged(*args, _original=original, _name=name, **kwargs):
            stage["name"] = _name
            return _original(*args, **kwargs)

        monkeypatch.setattr(jobs, name, staged)

    summary = jobs.run_job(job_from_dict(tiny_job_dict(tmp_path)))
    manifest = read_manifest(summary.paths.data_dir())
    files = {s: {e.file for e in manifest.shards(s)} for s in manifest.splits}
    counts = Counter(hashed)
    assert max(counts.values()) == 1, counts  # at most once per stage
    by_stage = {name: {f for (s, f) in counts if s == name} for name, _ in counts}
    assert by_stage["stage_train"] == files["train"] | files["val"]
    assert by_stage["stage_evaluate"] == files["test"]
    assert by_stage["stage_predict"] == files["test"]
    assert "stage_prepare" not in by_stage and "stage_export" not in by_stage
