"""`deepfleet cluster prepare`: one run folder at a fixed path, however many nodes ask."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import tomli_w

from conftest import tiny_job_dict
from deepfleet.cluster import prepare_run_at
from deepfleet.data import verify_dataset
from deepfleet.errors import UserError


@pytest.fixture
def job_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(tiny_job_dict(tmp_path)))
    return path


def test_many_nodes_at_once_get_one_complete_run_folder(job_file, tmp_path):
    run_dir = tmp_path / "shared" / "runs" / "tiny"
    with ThreadPoolExecutor(4) as pool:
        roots = list(pool.map(lambda _: prepare_run_at(job_file, run_dir).root, range(4)))
    assert set(roots) == {run_dir.resolve()}
    manifest = verify_dataset(run_dir / "shards")
    assert manifest.rows("train") > 0
    # The losers' temporary folders are gone: only the run folder is left.
    assert [p.name for p in run_dir.parent.iterdir()] == ["tiny"]
    before = (run_dir / "job.toml").stat().st_mtime_ns
    assert prepare_run_at(job_file, run_dir).root == run_dir.resolve()
    assert (run_dir / "job.toml").stat().st_mtime_ns == before


def test_refuses_a_different_job_or_a_foreign_folder(job_file, tmp_path):
    run_dir = tmp_path / "run"
    prepare_run_at(job_file, run_dir)
    other = tmp_path / "other.toml"
    other.write_text(tomli_w.dumps(tiny_job_dict(tmp_path, run={"seed": 7})))
    with pytest.raises(UserError, match="holds a different job"):
        prepare_run_at(other, run_dir)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a run folder"):
        prepare_run_at(job_file, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # An empty folder (a fresh volume's mount point) is fine.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (prepare_run_at(job_file, empty).root / "job.toml").is_file()
