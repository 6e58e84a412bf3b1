"""manifest.json carries its own digest (and, encrypted, an HMAC under the data key): an edited
manifest is refused by verify-data and by every reader, and row counts are checked against the
shards' Parquet footers."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from conftest import tiny_job_dict
from deepfleet.cli import run_cli
from deepfleet.config import dump_job, job_from_dict
from deepfleet.data import load_data_key, load_source, read_manifest, write_dataset
from deepfleet.data._manifest import canonical_bytes


def _copy(digits_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(digits_data, copy)
    return copy


def _edit(folder: Path, change, *, reseal: bool = False) -> None:
    path = folder / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    if reseal:  # what someone who knows the format but not the data key can do
        raw["digest"]["sha256"] = hashlib.sha256(canonical_bytes(raw)).hexdigest()
    path.write_text(json.dumps(raw, indent=2))


def _more_rows(raw: dict) -> None:
    raw["splits"]["train"]["shards"][0]["rows"] += 5
    raw["splits"]["train"]["rows"] += 5


def _refused(capsys, *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for word in words:
        assert word in err, err


def test_a_fresh_manifest_verifies_and_survives_reindenting(digits_data, tmp_path, capsys):
    data = _copy(digits_data, tmp_path)
    _edit(data, lambda raw: None)  # same content, other whitespace
    assert run_cli(["verify-data", str(data)]) == 0
    assert capsys.readouterr().out.startswith("ok ")


@pytest.mark.parametrize(
    "change",
    [
        _more_rows,
        lambda raw: raw["class_names"].__setitem__(3, "three"),
        lambda raw: raw["features"].__setitem__("scale", 1.0),
    ],
)
def test_an_edited_manifest_is_refused_by_verify_data(digits_data, tmp_path, capsys, change):
    data = _copy(digits_data, tmp_path)
    _edit(data, change)
    assert run_cli(["verify-data", str(data)]) == 2
    _refused(capsys, "manifest.json", "does not match its own digest")


def test_a_manifest_without_a_digest_is_refused(digits_data, tmp_path, capsys):
    data = _copy(digits_data, tmp_path)
    _edit(data, lambda raw: raw.pop("digest"))
    assert run_cli(["verify-data", str(data)]) == 2
    _refused(capsys, "has no digest")


def test_resealed_rows_disagree_with_the_shard_footer(digits_data, tmp_path, capsys):
    data = _copy(digits_data, tmp_path)
    _edit(data, _more_rows, reseal=True)
    assert run_cli(["verify-data", str(data)]) == 2
    first = read_manifest(data).shards("train")[0]
    _refused(capsys, first.file, f"holds {first.rows - 5} rows", f"says {first.rows}")


def test_train_and_predict_refuse_an_edited_manifest(digits_data, trained_run, tmp_path, capsys):
    data = _copy(digits_data, tmp_path)
    _edit(data, _more_rows)
    job_file = tmp_path / "job.toml"
    job_file.write_text(
        dump_job(job_from_dict(tiny_job_dict(tmp_path, data={"prepared": str(data)})))
    )
    assert run_cli(["train", str(job_file)]) == 2
    _refused(capsys, "does not match its own digest")
    assert (
        run_cli(["predict", str(trained_run.bundle), str(data), "--out", str(tmp_path / "preds")])
        == 2
    )
    _refused(capsys, "does not match its own digest")


def test_the_readers_check_footers_of_a_resealed_manifest(
    digits_data, trained_run, tmp_path, capsys
):
    data = _copy(digits_data, tmp_path)
    _edit(data, _more_rows, reseal=True)
    assert (
        run_cli(
            [
                "predict",
                str(trained_run.bundle),
                str(data),
                "--out",
                str(tmp_path / "preds"),
                "--split",
                "train",
            ]
        )
        == 2
    )
    _refused(capsys, "rows but the manifest says")


def test_an_encrypted_manifest_is_authenticated_by_the_data_key(tmp_path, capsys):
    key = tmp_path / "data.key"
    assert run_cli(["keys", "new", "--out", str(key)]) == 0
    data = tmp_path / "enc"
    write_dataset(
        load_source("digits"),
        data,
        shards=2,
        val_fraction=0.1,
        test_fraction=0.2,
        seed=0,
        key=load_data_key(key),
    )
    capsys.readouterr()
    assert run_cli(["verify-data", str(data), "--key", str(key)]) == 0
    assert "authenticated by the data key" in capsys.readouterr().out
    # Resealing the sha256 is not enough without the key.
    _edit(data, lambda raw: raw["class_names"].__setitem__(0, "zero"), reseal=True)
    assert run_cli(["verify-data", str(data), "--key", str(key)]) == 2
    _refused(capsys, "not authenticated by the data key")
