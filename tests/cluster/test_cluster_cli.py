"""`deepfleet cluster k8s|slurm` on the command line: files written, bad input as one line."""

from __future__ import annotations

import tomllib

import yaml
from cluster_support import validate_object

from deepfleet.cli import run_cli


def test_k8s_end_to_end(tmp_path):
    out = tmp_path / "k8s"
    # In process: a subprocess would spend its time importing torch (the two-node test runs
    # the real `python -m deepfleet` processes).
    code = run_cli(
        [
            "cluster",
            "k8s",
            "digits",
            "--nodes",
            "2",
            "--gpus-per-node",
            "8",
            "--image",
            "registry.example.com/deepfleet:0.1.0",
            "--out",
            str(out),
            "--resume",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "common.yaml",
        "indexed-job.yaml",
        "pytorchjob.yaml",
    ]
    for path in out.iterdir():
        for obj in yaml.safe_load_all(path.read_text()):
            validate_object(obj)
    config = list(yaml.safe_load_all((out / "common.yaml").read_text()))[1]
    job = tomllib.loads(config["data"]["job.toml"])
    # The shipped digits job, as written, with its run folders on the shared volume.
    assert job["run"] == {
        "name": "digits",
        "seed": 0,
        "device": "auto",
        "runs_dir": "/workspace/runs",
    }
    assert job["model"]["name"] == "cnn"


def test_serve_and_slurm(tmp_path, capsys):
    out = tmp_path / "serve"
    assert (
        run_cli(
            [
                "cluster",
                "k8s",
                "digits",
                "--image",
                "img:1",
                "--serve",
                "runs/digits/bundle",
                "--gpus-per-node",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    deployment, _, _ = yaml.safe_load_all((out / "serve.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "resources" in container and "nvidia.com/gpu" not in container["resources"]["limits"]
    script = tmp_path / "train.sbatch"
    assert (
        run_cli(
            [
                "cluster",
                "slurm",
                "digits",
                "--nodes",
                "3",
                "--gpus-per-node",
                "2",
                "--out",
                str(script),
            ]
        )
        == 0
    )
    text = script.read_text()
    assert "#SBATCH --nodes=3" in text and "--nproc 2 --nnodes 3" in text
    assert script.stat().st_mode & 0o100


def test_bad_input_is_one_line(tmp_path, capsys):
    cases = [
        (["cluster", "k8s", "digits", "--image", "img", "--nodes", "0"], "--nodes must be"),
        (["cluster", "k8s", "no-such-job", "--image", "img"], "job file not found"),
        (["cluster", "k8s", "digits", "--image", "img", "--storage", "big"], "--storage"),
        (["cluster", "slurm", "digits", "--time", "soon"], "--time"),
        (["cluster", "slurm", "digits", "--out", str(tmp_path)], "is a folder"),
    ]
    for argv, message in cases:
        assert (
            run_cli(argv + ["--out", str(tmp_path / "x")] if "--out" not in argv else argv) == 2
        ), argv
        # One message (the console may wrap it to the terminal width), never a traceback.
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()
