import warnings

import pytest

from deepfleet.config import apply_override, dump_job, job_from_dict, load_job
from deepfleet.errors import UserError


def write(tmp_path, text, name="job.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_fill_every_section(tmp_path):
    job = load_job(write(tmp_path, "[run]\nname = 'x'\n"))
    assert job.run.name == "x"
    assert job.train.phases[0].epochs == 1
    assert job.data.source == "digits"


def test_error_names_key_path_and_value(tmp_path):
    path = write(tmp_path, "[train]\nbatch_size = -3\n")
    with pytest.raises(UserError) as err:
        load_job(path)
    assert str(err.value) == "train.batch_size: must be > 0, got -3"


def test_unknown_key_is_an_error(tmp_path):
    path = write(tmp_path, "[train]\nbatchsize = 3\n")
    with pytest.raises(UserError, match=r"train.batchsize: unknown key, got 3"):
        load_job(path)


def test_error_inside_a_phase_names_its_index(tmp_path):
    path = write(tmp_path, "[[train.phases]]\nepochs = 1\nlr = 0\n")
    with pytest.raises(UserError, match=r"train.phases.0.lr: must be > 0.0, got 0"):
        load_job(path)


def test_literal_choices_are_listed(tmp_path):
    path = write(tmp_path, "[train]\nprecision = 'fp8'\n")
    with pytest.raises(UserError, match=r"train.precision: must be one of .*'fp32'"):
        load_job(path)


def test_split_fractions_must_leave_training_data(tmp_path):
    path = write(tmp_path, "[data]\nval_fraction = 0.5\ntest_fraction = 0.5\n")
    with pytest.raises(UserError, match="val_fraction \\+ test_fraction must be < 1"):
        load_job(path)


def test_malformed_toml(tmp_path):
    path = write(tmp_path, "[train\nbatch_size = 3\n")
    with pytest.raises(UserError, match="malformed TOML"):
        load_job(path)


def test_missing_job_file(tmp_path):
    with pytest.raises(UserError, match="job file not found"):
        load_job(tmp_path / "nope.toml")


def test_overrides_set_scalars_tables_and_list_items(tmp_path):
    path = write(tmp_path, "[[train.phases]]\nepochs = 1\n[[train.phases]]\nepochs = 2\n")
    job = load_job(
        path,
        [
            "train.batch_size=128",
            "train.phases.1.lr=0.5",
            "run.name=abc",
            "model.params.hidden=[8, 4]",
            "train.grad_clip=1.0",
        ],
    )
    assert job.train.batch_size == 128
    assert job.train.phases[1].lr == 0.5
    assert job.train.phases[0].lr == 1e-3
    assert job.run.name == "abc"
    assert job.model.params == {"hidden": [8, 4]}
    assert job.train.grad_clip == 1.0


def test_override_errors_are_user_errors(tmp_path):
    raw: dict = {"train": {"phases": [{}]}}
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        apply_override(raw, "train.batch_size")
    with pytest.raises(UserError, match="no item 3"):
        apply_override(raw, "train.phases.3.lr=1")
    with pytest.raises(UserError, match="train.batch_size: must be > 0, got 0"):
        load_job(write(tmp_path, ""), ["train.batch_size=0"])


def test_resolved_job_round_trips_through_toml(tmp_path):
    job = job_from_dict({"train": {"batch_size": 7}, "model": {"name": "cnn"}})
    path = write(tmp_path, dump_job(job))
    assert load_job(path) == job


def test_relative_paths_resolve_against_the_job_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "prepared").mkdir()
    path = write(
        tmp_path / "sub", "[data]\nprepared = '../prepared'\n[model]\nname = 'my_models:build'\n"
    )
    job = load_job(path)
    assert job.data.prepared == str((tmp_path / "prepared").resolve())
    assert job.model.path == str(tmp_path / "sub")


def test_job_file_reference_is_current():
    from pathlib import Path

    from deepfleet.config import reference_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "job-file.md"
    assert doc.read_text() == reference_markdown(), (
        "docs/job-file.md is stale: python -m deepfleet.config.reference > docs/job-file.md"
    )


def test_a_whole_table_check_names_the_table_once(tmp_path):
    """The model-level check names its table; it does not append the whole table."""
    from deepfleet.config import job_from_dict

    with pytest.raises(UserError) as err:
        job_from_dict({"data": {"source": "digits", "val_fraction": 0.7, "test_fraction": 0.5}})
    message = str(err.value)
    assert message.startswith("data: val_fraction + test_fraction must be < 1"), message
    assert "{" not in message and message.count("got") == 1, message


def test_flags_are_checked_by_the_same_formatter(tmp_path, capsys):
    from deepfleet.cli import run_cli

    assert (
        run_cli(
            ["prepare", "digits", "--out", str(tmp_path / "d"), "--val", "0.7", "--test", "0.5"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: data: val_fraction + test_fraction must be < 1"), err
    assert "{" not in err, err


STAGES_NOTICE = "train.stages is deprecated: use train.phases (same entries)"


def _notices(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]


def test_the_old_stages_key_loads_into_phases_with_one_notice(tmp_path):
    text = "[[train.stages]]\nname = 'a'\nepochs = 1\n[[train.stages]]\nname = 'b'\nepochs = 2\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = load_job(write(tmp_path, text))
    assert _notices(caught) == [STAGES_NOTICE]
    assert [(p.name, p.epochs) for p in job.train.phases] == [("a", 1), ("b", 2)]
    dumped = dump_job(job)
    assert "[[train.phases]]" in dumped and "stages" not in dumped


@pytest.mark.parametrize("file_key", ["stages", "phases"])
@pytest.mark.parametrize("set_key", ["stages", "phases"])
def test_overrides_reach_the_phases_by_either_name(tmp_path, file_key, set_key):
    path = write(tmp_path, f"[[train.{file_key}]]\nepochs = 1\n[[train.{file_key}]]\nepochs = 2\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        job = load_job(path, [f"train.{set_key}.1.epochs=5"])
    assert [p.epochs for p in job.train.phases] == [1, 5]
    old_name_used = "stages" in (file_key, set_key)
    assert _notices(caught) == ([STAGES_NOTICE] if old_name_used else [])


def test_stages_and_phases_together_are_an_error(tmp_path):
    path = write(tmp_path, "[[train.stages]]\nepochs = 1\n[[train.phases]]\nepochs = 2\n")
    with pytest.raises(UserError, match=r"^train: stages and phases: give one"):
        load_job(path)
