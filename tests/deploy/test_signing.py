"""OpenSSF model signing of bundles: keys, sign, verify, and refusal of any change."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys

import pytest
from _deploy_helpers import copy_bundle
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from conftest import run_deepfleet
from deepfleet.cli import run_cli
from deepfleet.config import dump_job, load_job
from deepfleet.deploy import (
    ONNX_FILE,
    SIGNATURE,
    new_signing_key,
    open_bundle,
    sign_bundle,
    verify_bundle,
)
from deepfleet.errors import UserError
from deepfleet.jobs import stage_export
from deepfleet.runs import open_run


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return new_signing_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def signed(trained_run, tmp_path, keys):
    root = copy_bundle(trained_run.bundle, tmp_path / "bundle")
    sign_bundle(root, keys[0])
    return root


def test_new_signing_key_is_p256_private_and_never_overwritten(tmp_path):
    private, public = new_signing_key(tmp_path / "k")
    key = load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    before = private.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        new_signing_key(tmp_path / "k")
    assert private.read_bytes() == before


def test_keys_new_signing_cli(tmp_path, capsys):
    done = run_deepfleet("keys", "new", "--signing", "--out", str(tmp_path / "k"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "k" / "signing-key.pem").is_file()
    assert run_cli(["keys", "new", "--signing", "--out", str(tmp_path / "k")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_signature_verifies_here_and_with_the_reference_tool(signed, keys):
    verify_bundle(signed, keys[1])
    assert open_bundle(signed, keys[1]).name == "tiny"
    # The model_signing project's own command line is an independent verifier.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_signing",
            "verify",
            "key",
            str(signed),
            "--signature",
            str(signed / SIGNATURE),
            "--public_key",
            str(keys[1]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "damage, message",
    [
        ("change", "changed: model.onnx$"),
        ("add", "added: notes.txt$"),
        ("add-git", "unexpected file .gitattributes"),  # model_signing skips .git*; we do not
        ("remove", "missing: metrics.json$"),
        ("symlink", "job.toml.* is a symlink"),
    ],
)
def test_verification_refuses_any_change(signed, keys, tmp_path, damage, message):
    if damage == "change":
        data = bytearray((signed / ONNX_FILE).read_bytes())
        data[100] ^= 1
        (signed / ONNX_FILE).write_bytes(bytes(data))
    elif damage == "add":
        (signed / "notes.txt").write_text("hi")
    elif damage == "add-git":
        (signed / ".gitattributes").write_text("*")
    elif damage == "remove":
        (signed / "metrics.json").unlink()
    elif damage == "symlink":
        (tmp_path / "x.toml").write_bytes((signed / "job.toml").read_bytes())
        (signed / "job.toml").unlink()
        (signed / "job.toml").symlink_to(tmp_path / "x.toml")
    with pytest.raises(UserError, match=message):
        verify_bundle(signed, keys[1])


def test_wrong_key_and_unsigned_bundle_are_refused(trained_run, signed, tmp_path):
    _, other = new_signing_key(tmp_path / "other")
    with pytest.raises(UserError, match="signature verification failed"):
        verify_bundle(signed, other)
    with pytest.raises(UserError, match="not signed"):
        open_bundle(trained_run.bundle, other)


def test_verify_cli(signed, keys, capsys):
    assert run_cli(["verify", str(signed), "--public-key", str(keys[1])]) == 0
    assert "signature valid" in capsys.readouterr().out
    (signed / "weights.safetensors").write_bytes(b"tampered")
    bad = run_deepfleet("verify", str(signed), "--public-key", str(keys[1]))
    assert bad.returncode == 2
    assert "error:" in bad.stderr and "changed: weights.safetensors" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_export_signs_with_the_job_files_key(trained_run, tmp_path, keys):
    root = shutil.copytree(trained_run.root, tmp_path / "run")
    job = load_job(root / "job.toml")
    job.export.signing_key = str(keys[0])
    (root / "job.toml").write_text(dump_job(job))
    bundle = stage_export(open_run(root))
    verify_bundle(bundle, keys[1])
    assert (bundle / SIGNATURE).is_file()


def test_sign_and_verify_with_relative_paths(trained_run, tmp_path, keys, monkeypatch):
    """The signature never covers itself, however the bundle path is written."""
    copy_bundle(trained_run.bundle, tmp_path / "rel" / "bundle")
    monkeypatch.chdir(tmp_path / "rel")
    sign_bundle("bundle", keys[0])
    verify_bundle("bundle", keys[1])
    assert run_cli(["verify", "bundle", "--public-key", str(keys[1])]) == 0
