"""`deepfleet serve` refuses to start on a bad bundle or without a token, in one line."""

from __future__ import annotations

import pytest
from _deploy_helpers import copy_bundle

from deepfleet.cli import run_cli
from deepfleet.deploy import new_signing_key, sign_bundle


@pytest.fixture
def no_serve_env(monkeypatch):
    monkeypatch.delenv("DEEPFLEET_SERVE_TOKEN", raising=False)
    monkeypatch.delenv("DEEPFLEET_PUBLIC_KEY", raising=False)


def test_serve_needs_a_token_or_no_auth(trained_run, capsys, no_serve_env):
    assert run_cli(["serve", str(trained_run.bundle)]) == 2
    assert "needs a bearer token" in capsys.readouterr().err


def test_serve_refuses_a_tampered_signed_bundle(
    trained_run, tmp_path, capsys, no_serve_env, monkeypatch
):
    root = copy_bundle(trained_run.bundle, tmp_path / "bundle")
    private, public = new_signing_key(tmp_path / "keys")
    sign_bundle(root, private)
    (root / "job.toml").write_text("# changed\n")
    monkeypatch.setenv("DEEPFLEET_PUBLIC_KEY", str(public))  # configured, so verified
    assert run_cli(["serve", str(root), "--no-auth"]) == 2
    assert "changed: job.toml" in capsys.readouterr().err
    (root / "extra").write_text("x")
    assert run_cli(["serve", str(trained_run.bundle), "--no-auth"]) == 2
    assert "not signed" in capsys.readouterr().err


def test_serve_refuses_a_folder_that_is_neither_bundle_nor_repository(
    tmp_path, capsys, no_serve_env
):
    (tmp_path / "empty").mkdir()
    assert run_cli(["serve", str(tmp_path / "empty"), "--no-auth"]) == 2
    assert "neither a bundle (model.json) nor a model repository" in capsys.readouterr().err
    assert run_cli(["serve", str(tmp_path / "missing"), "--no-auth"]) == 2
    assert "no such folder" in capsys.readouterr().err
    for flag, value, says in (
        ("--grpc-port", "70000", "--grpc-port must be 0..65535"),
        ("--max-versions", "-1", "--max-versions must be >= 0"),
        ("--poll-interval", "-2", "--poll-interval must be >= 0"),
    ):
        assert run_cli(["serve", str(tmp_path / "empty"), "--no-auth", flag, value]) == 2
        assert says in capsys.readouterr().err


@pytest.mark.parametrize(
    "host, warned",
    [
        ("0.0.0.0", True),
        ("::", True),
        ("10.1.2.3", True),
        ("myhost.example", True),
        ("127.0.0.1", False),
        ("127.0.0.5", False),
        ("::1", False),
        ("localhost", False),
    ],
)
def test_no_auth_on_a_reachable_address_warns(trained_run, host, warned):
    from deepfleet.deploy.serve import ServeConfig
    from deepfleet.deploy.serve._run import exposure_warning

    config = ServeConfig(bundle=str(trained_run.bundle), host=host)
    assert (exposure_warning(config) is not None) == warned
    with_token = ServeConfig(bundle=str(trained_run.bundle), host=host, token="t" * 16)
    assert exposure_warning(with_token) is None


def test_serve_warns_before_anything_else(tmp_path, capsys, no_serve_env):
    # A missing bundle stops the command before it binds: the warning came first.
    missing = tmp_path / "missing"
    assert run_cli(["serve", str(missing), "--host", "0.0.0.0", "--no-auth"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("WARNING: serving on 0.0.0.0 WITHOUT AUTHENTICATION")
    assert run_cli(["serve", str(missing), "--no-auth"]) == 2
    assert "WARNING" not in capsys.readouterr().err
