"""prepare at scale: memory flat in the data set's size, a killed prepare resumed to the
same bytes, and the same shards from 1, 2 or 4 workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _image_folders import colour_folder, write_idx_pair

from deepfleet.config import DataSection
from deepfleet.data import prepare_from_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}

# Runs in a fresh interpreter: prepares SOURCE and reports its peak RSS over the RSS it had
# once the source was opened (the kernel's high-water mark VmHWM: getrusage's ru_maxrss would
# carry over the forked parent's peak across exec), and the largest peak of its pool workers
# (ru_maxrss of children: forked workers count the pages they share with the parent).
_MEASURE = """
import json, resource, sys
from deepfleet.data import load_source, write_dataset

def kib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

samples = load_source(sys.argv[1])
base = kib("VmRSS:")
write_dataset(samples, sys.argv[2], shards=4, val_fraction=0.1, test_fraction=0.1, seed=0,
              workers=2)
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"base": base, "growth": kib("VmHWM:") - base, "workers": workers}))
"""


def _measure(source: str, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, source, str(out)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_memory_stays_flat_when_the_data_grows_twelvefold(tmp_path):
    """Peak memory is counted, not capped: RLIMIT_AS would judge the address space torch and
    Arrow reserve but never touch. 250,000 images (196 MB of pixels) against 20,000: the
    parent's and each worker's peak may grow by the labels and ids (16 bytes a sample),
    never by the pixels."""
    small, large = tmp_path / "small", tmp_path / "large"
    write_idx_pair(small, 20_000)
    write_idx_pair(large, 250_000)
    pixels = (large / "train-images-idx3-ubyte").stat().st_size
    a = _measure(f"mnist:{small}", tmp_path / "a")
    b = _measure(f"mnist:{large}", tmp_path / "b")
    bound = 40 << 20
    assert pixels > 4 * bound
    assert b["base"] < a["base"] + bound, (a, b)  # opening the source reads no pixels
    assert b["growth"] < bound, (a, b)  # nor does writing the shards, in the parent
    assert b["workers"] < a["workers"] + bound, (a, b)  # nor does any worker


@pytest.mark.slow
def test_a_killed_prepare_resumes_to_the_bytes_of_an_uninterrupted_one(tmp_path):
    write_idx_pair(tmp_path / "src", 80_000)
    source = f"mnist:{tmp_path / 'src'}"
    cmd = [sys.executable, "-m", "deepfleet", "prepare", source, "--out"]
    flags = ["--shards", "16", "--workers", "1"]
    stage = tmp_path / ".out.partial"
    child = subprocess.Popen([*cmd, str(tmp_path / "out"), *flags], env=ENV)
    while len(list(stage.glob("train-*.parquet"))) < 3:
        assert child.poll() is None, "prepare ended before it could be killed"
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "out").exists()  # nothing that looks complete
    kept = {p.name: p.stat().st_ino for p in stage.glob("*.parquet")}
    assert len(kept) >= 3 and not (stage / "manifest.json").exists()
    done = subprocess.run([*cmd, str(tmp_path / "out"), *flags], env=ENV, capture_output=True)
    assert done.returncode == 0, done.stderr
    for name, inode in kept.items():  # kept as they were, not written again
        assert (tmp_path / "out" / name).stat().st_ino == inode
    prepare_from_config(
        DataSection(source=source, shards=16, workers=1), tmp_path / "whole", seed=0
    )
    assert folder_bytes(tmp_path / "out") == folder_bytes(tmp_path / "whole")
    assert not stage.exists()


@pytest.mark.slow
def test_one_two_and_four_workers_write_identical_shards(tmp_path):
    colour_folder(tmp_path / "images", per_class=10)
    write_idx_pair(tmp_path / "idx", 3_000, gz=True)
    write_idx_pair(tmp_path / "idx", 500, prefix="t10k", gz=True)
    for source in (str(tmp_path / "images"), f"mnist:{tmp_path / 'idx'}"):
        runs = []
        for workers in (1, 2, 4):
            out = tmp_path / f"out-{workers}"
            data = DataSection(source=source, shards=4, workers=workers, image_size=[16, 16])
            prepare_from_config(data, out, seed=3)
            runs.append(folder_bytes(out))
            os.system(f"rm -rf {out}")
        assert runs[0] == runs[1] == runs[2], source
        assert len(runs[0]) >= 1 + 4 + 2
