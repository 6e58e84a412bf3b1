import json
from pathlib import Path

import pytest

from conftest import run_deepfleet, tiny_job_dict
from deepfleet.cli import run_cli
from deepfleet.config import job_from_dict
from deepfleet.errors import UserError
from deepfleet.jobs import stage_evaluate, stage_prepare, stage_train
from deepfleet.runs import RunPaths, create_run
from deepfleet.track._compare import _curve_keys, compare_runs, load_result
from deepfleet.track._runs import list_runs


def _trained(base: Path, name: str, epochs: int) -> RunPaths:
    phases = [{"name": "a", "epochs": epochs, "lr": 0.01}]
    job = job_from_dict(tiny_job_dict(base, run={"name": name}, train={"phases": phases}))
    paths = create_run(job)
    stage_prepare(paths, job)
    stage_train(paths)
    stage_evaluate(paths)
    return paths


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Two trained and evaluated runs, one that failed, one not trained, and a stray folder."""
    base = tmp_path_factory.mktemp("track")
    _trained(base, "alpha", 2)
    _trained(base, "beta", 3)
    failed = create_run(job_from_dict(tiny_job_dict(base, run={"name": "gamma"})))
    failed.mark_failed("train", ValueError("out of memory"))
    create_run(job_from_dict(tiny_job_dict(base, run={"name": "delta"})))
    stray = base / "runs" / "notes"
    stray.mkdir()
    (stray / "todo.txt").write_text("not a run\n")
    return base / "runs"


def _state(row) -> dict:
    return json.loads((row.path / "checkpoints" / "state.json").read_text())


def _report(path: Path) -> dict:
    return json.loads((path / "report" / "metrics.json").read_text())


def test_list_runs_reads_each_run_folder(runs_dir):
    rows = list_runs(runs_dir)
    assert [row.name.split("-")[0] for row in rows] == ["alpha", "beta", "delta", "gamma"]
    assert [row.name for row in rows] == sorted(row.name for row in rows)
    alpha, beta, delta, gamma = rows
    for row, epochs in ((alpha, 2), (beta, 3)):
        state = _state(row)
        assert row.task == "classification"
        assert row.status == "evaluated"
        assert row.epochs == epochs == state["epochs"]
        assert row.best_value == state["best_value"]
        assert row.monitor == state["monitor"]
        assert row.strategy == state["strategy"]
        assert row.seconds == state["seconds"]
    assert delta.status == "not trained" and delta.epochs is None
    assert gamma.status == "failed"
    assert gamma.failure == "train: ValueError: out of memory"


def test_list_runs_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="runs folder not found"):
        list_runs(tmp_path / "nowhere")


def test_runs_ls_prints_the_table(runs_dir):
    done = run_deepfleet("runs", "ls", str(runs_dir), env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    for row in list_runs(runs_dir):
        assert row.name in done.stdout
    assert "notes" not in done.stdout
    assert "classification" in done.stdout
    assert "evaluated" in done.stdout and "not trained" in done.stdout
    assert "failed: train" in done.stdout and "ValueError: out of memory" in done.stdout
    best = list_runs(runs_dir)[0]
    assert f"{best.monitor} {best.best_value:.4g}" in done.stdout


def test_compare_writes_table_and_curves(runs_dir, tmp_path):
    alpha, beta = (row.path for row in list_runs(runs_dir)[:2])
    out = tmp_path / "cmp"
    assert run_cli(["runs", "compare", str(alpha), str(beta), "--out", str(out)]) == 0
    table = json.loads((out / "compare.json").read_text())
    assert [run["path"] for run in table["runs"]] == [str(alpha), str(beta)]
    for run, path in zip(table["runs"], (alpha, beta), strict=True):
        report = _report(path)
        numeric = {k: v for k, v in report.items() if isinstance(v, int | float)}
        assert run["metrics"] == numeric
        assert (
            run["best_value"]
            == json.loads((path / "checkpoints/state.json").read_text())["best_value"]
        )
        assert set(numeric) <= set(table["columns"])
    assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert not list(out.glob(".*tmp*"))
    _assert_curves_image(
        out / "curves.png", len(_curve_keys([load_result(alpha), load_result(beta)]))
    )


def _assert_curves_image(path: Path, panels: int) -> None:
    """A PNG about the size plot_curves draws: figsize (4.5 per panel x 3.6 inches) at 110
    dpi; bbox_inches="tight" trims or grows the margins, so allow 50% to 110% of it."""
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert panels >= 2
    assert 0.5 * 4.5 * panels * 110 <= width <= 1.1 * 4.5 * panels * 110
    assert 0.5 * 3.6 * 110 <= height <= 1.1 * 3.6 * 110


def test_compare_library_on_one_run(runs_dir, tmp_path):
    row = list_runs(runs_dir)[1]
    result = compare_runs([row.path], tmp_path / "one")
    assert result.runs[0].row.name == row.name
    assert [record["epoch"] for record in result.runs[0].epochs] == [1, 2, 3]
    assert result.curves.read_bytes().startswith(b"\x89PNG")


def test_compare_rejects_a_folder_that_is_not_a_run(runs_dir, tmp_path):
    alpha = list_runs(runs_dir)[0].path
    done = run_deepfleet(
        "runs", "compare", str(alpha), str(runs_dir / "notes"), "--out", str(tmp_path / "o")
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a run folder" in lines[0]
    assert not (tmp_path / "o").exists()
    assert run_cli(["runs", "compare", str(tmp_path / "missing")]) == 2
    assert run_cli(["runs", "ls", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("args", [["runs"], ["runs", "ls"], ["runs", "compare"]])
def test_runs_help(args, capsys):
    assert run_cli([*args, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out
