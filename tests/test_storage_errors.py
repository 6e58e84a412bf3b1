"""A full, read-only or missing output folder is the user's environment, not a crash: every
command says so in one line naming the path and the cause, exits 2, and leaves no temporary
file or folder behind that a later stage could take for a result."""

from __future__ import annotations

import errno
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import tiny_job_dict
from deepfleet.cli import run_cli
from deepfleet.config import dump_job, job_from_dict


def _mount(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def mounts(tmp_path):
    """Small real file systems: `full` holds 256 KiB, `readonly` refuses every write."""
    made = {}

    def make(kind: str) -> Path:
        target = tmp_path / f"{kind}-{uuid.uuid4().hex[:6]}"
        _mount(target, "size=256k" if kind == "full" else "ro,size=64k")
        made[kind] = target
        return target

    yield make
    for target in made.values():
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _one_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for word in words:
        assert word in err, err
    return err


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_prepare_into_a_read_only_folder(mounts, capsys):
    ro = mounts("readonly")
    assert run_cli(["prepare", "digits", "--out", str(ro / "data")]) == 2
    _one_line(capsys, str(ro), "Read-only file system")


def _fill(folder: Path, leave_kib: int) -> None:
    with open(folder / "filler", "wb") as handle:
        handle.write(b"\0" * ((256 - leave_kib) * 1024))


def test_prepare_into_a_full_disk(mounts, capsys):
    full = mounts("full")
    _fill(full, leave_kib=24)
    assert run_cli(["prepare", "digits", "--out", str(full / "data"), "--shards", "2"]) == 2
    _one_line(capsys, str(full / "data"), "No space left on device")
    assert not (full / "data").exists()
    assert _leftovers(full) == []


def test_train_checkpoint_on_a_full_disk(mounts, tmp_path, digits_data, capsys):
    """The run folder fits, the first checkpoint (weights + Adam state, ~1 MB) does not."""
    full = mounts("full")
    job = tiny_job_dict(
        tmp_path,
        run={"runs_dir": str(full / "runs")},
        data={"prepared": str(digits_data)},
        model={"name": "mlp", "params": {"hidden": [1024]}},
    )
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(job_from_dict(job)))
    assert run_cli(["train", str(job_file)]) == 2
    _one_line(capsys, str(full / "runs"), "checkpoints", "No space left on device")
    assert _leftovers(full) == []


def test_train_checkpoint_write_refused(monkeypatch, tmp_path, digits_data, capsys):
    """The same with a writer that fails the way a full disk does, wherever the test runs."""
    import torch.distributed.checkpoint.filesystem as fs

    def refuse(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs, "_write_item", refuse)
    job = tiny_job_dict(tmp_path, data={"prepared": str(digits_data)})
    job_file = tmp_path / "job.toml"
    job_file.write_text(dump_job(job_from_dict(job)))
    assert run_cli(["train", str(job_file)]) == 2
    _one_line(capsys, "checkpoints", "step-", "No space left on device")
    assert _leftovers(tmp_path / "runs") == []


def _predict_into(trained_run, out: Path) -> int:
    return run_cli(
        ["predict", str(trained_run.bundle), str(trained_run.data_dir()), "--out", str(out)]
    )


def test_predict_into_a_read_only_folder(mounts, trained_run, capsys):
    ro = mounts("readonly")
    assert _predict_into(trained_run, ro / "preds") == 2
    _one_line(capsys, str(ro / "preds"), "Read-only file system")


def test_predict_into_a_full_disk(mounts, trained_run, capsys):
    full = mounts("full")
    _fill(full, leave_kib=8)  # the folders fit, the outputs do not
    assert _predict_into(trained_run, full / "preds") == 2
    _one_line(capsys, str(full / "preds"), "No space left on device")
    assert _leftovers(full) == []


def test_keys_new_into_a_read_only_folder(mounts, capsys):
    ro = mounts("readonly")
    assert run_cli(["keys", "new", "--out", str(ro / "data.key")]) == 2
    _one_line(capsys, str(ro), "Read-only file system")
    assert run_cli(["keys", "new", "--signing", "--out", str(ro / "keys")]) == 2
    _one_line(capsys, str(ro), "Read-only file system")


def test_cluster_into_a_read_only_folder(mounts, capsys):
    ro = mounts("readonly")
    assert run_cli(["cluster", "k8s", "digits", "--image", "img:1", "--out", str(ro / "k8s")]) == 2
    _one_line(capsys, str(ro), "Read-only file system")
    assert run_cli(["cluster", "slurm", "digits", "--out", str(ro / "job.sbatch")]) == 2
    _one_line(capsys, str(ro), "Read-only file system")


def test_bench_into_a_read_only_folder(mounts, capsys):
    ro = mounts("readonly")
    assert (
        run_cli(
            [
                "bench",
                "--workload",
                "mlp",
                "--steps",
                "1",
                "--repeats",
                "1",
                "--warmup",
                "0",
                "--no-infer",
                "--out",
                str(ro / "bench"),
            ]
        )
        == 2
    )
    _one_line(capsys, str(ro), "Read-only file system")


def test_a_file_where_a_folder_should_be(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    assert run_cli(["prepare", "digits", "--out", str(blocker / "data")]) == 2
    _one_line(capsys, str(blocker))
