"""`deepfleet prepare` starts in a fraction of a second: neither the command nor its shard
workers import torch (seconds of start-up, for nothing prepare uses) or pandas (which
pyarrow imports when handed a NumPy array to convert). Checked in a real subprocess with
`python -X importtime`, which also reports the spawned workers' imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from _image_folders import write_idx_pair

REPO = Path(__file__).resolve().parents[2]


def _imported(stderr: str) -> set[str]:
    """Top-level module names that -X importtime reports as imported."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_prepare_and_its_workers_import_neither_torch_nor_pandas(tmp_path):
    write_idx_pair(tmp_path / "idx", 3000)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deepfleet", "prepare", str(tmp_path / "idx")]
        + ["--out", str(tmp_path / "out"), "--workers", "2", "--shards", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = _imported(done.stderr)
    assert {"deepfleet", "pyarrow", "numpy"} <= imported  # the report is read right
    assert "torch" not in imported and "pandas" not in imported
    # The shards are the usual ones: every sample once, ids and labels as int64.
    tables = [pq.read_table(p) for p in sorted((tmp_path / "out").glob("*.parquet"))]
    ids = sorted(i for t in tables for i in t.column("id").to_pylist())
    assert ids == list(range(3000))
    assert all(str(t.schema.field("label").type) == "int64" for t in tables)
    for t in tables:
        assert t["label"].to_pylist() == [i % 10 for i in t["id"].to_pylist()]
