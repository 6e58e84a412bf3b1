"""Bundle signatures with OpenSSF model signing (the `model-signing` package), EC P-256 keys.

The signature is a Sigstore bundle written to model.sig inside the bundle folder; it covers
every other file (model.sig alone is excluded, nothing else — not even .git paths), so a
changed, added or removed file fails verification. The standard tool verifies it too:
`model_signing verify key BUNDLE --signature BUNDLE/model.sig --public-key KEY.pub`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deepfleet._atomic import write_bytes_atomic
from deepfleet.deploy._bundle import SIGNATURE, LoadedBundle, load_bundle, read_bundle_spec
from deepfleet.errors import UserError

PRIVATE_KEY = "signing-key.pem"
PUBLIC_KEY = "signing-key.pub"


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: an existing key is never overwritten, not even by a race with another process.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def new_signing_key(out: str | Path) -> tuple[Path, Path]:
    """Create an EC P-256 key pair in folder `out`: (private key, public key) PEM paths.

    The private key is written with mode 0600. Existing key files are never overwritten.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(
            f"{out}: exists and is not a folder (--signing writes a key pair into a folder)"
        )
    private, public = out / PRIVATE_KEY, out / PUBLIC_KEY
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise UserError(f"{path}: already exists; refusing to overwrite a key")
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    _write_new(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _write_new(
        public,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return private, public


def _hashing_config(bundle: Path):
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[bundle / SIGNATURE], ignore_git_paths=False)


def _key_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    return path


def sign_bundle(bundle: str | Path, private_key: str | Path) -> Path:
    """Sign a (checked) bundle with an EC private key; returns the signature's path."""
    from model_signing import signing

    # model_signing matches ignored paths literally: relative paths would sign model.sig too.
    bundle = Path(bundle).resolve()
    read_bundle_spec(bundle)
    key = _key_file(private_key, "signing key")
    signature = bundle / SIGNATURE
    tmp = bundle.parent / f".{bundle.name}.{SIGNATURE}.tmp"
    try:
        config = signing.Config().use_elliptic_key_signer(private_key=key)
        config.set_hashing_config(_hashing_config(bundle)).sign(bundle, tmp)
    except (ValueError, TypeError) as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{key}: cannot sign with this key ({err})") from None
    # Written beside the folder first so the signed file set never includes a partial file.
    write_bytes_atomic(signature, tmp.read_bytes())
    tmp.unlink()
    return signature


def verify_bundle(bundle: str | Path, public_key: str | Path) -> None:
    """Raise UserError unless the bundle's signature is valid for `public_key` and every
    file is exactly as signed (none changed, added or removed; no symlinks)."""
    from model_signing import verifying

    bundle = Path(bundle).resolve()
    key = _key_file(public_key, "public key")
    signature = bundle / SIGNATURE
    if not bundle.is_dir():
        raise UserError(f"{bundle}: bundle folder not found")
    if not signature.is_file() or signature.is_symlink():
        raise UserError(
            f"{bundle}: bundle is not signed (no {SIGNATURE}) but a public key is configured"
        )
    try:
        verifying.Config().use_elliptic_key_verifier(public_key=key).verify(bundle, signature)
    except Exception as err:  # model_signing raises ValueError and crypto/json errors
        raise UserError(f"{bundle}: signature verification failed: {_explain(err)}") from None
    read_bundle_spec(bundle)


def _explain(err: Exception) -> str:
    """model_signing's mismatch report (a list of sentences with digests) as one short line."""
    text = str(err)
    changed = re.findall(r"Hash mismatch for \\?'([^'\\]+)", text)
    added = re.search(r"Extra files found in model '[^']*': ([^'\]\"]+)", text)
    missing = re.search(r"Missing files in model '[^']*': ([^'\]\"]+)", text)
    parts = []
    if changed:
        parts.append(f"changed: {', '.join(changed)}")
    if added:
        parts.append(f"added: {added.group(1).strip()}")
    if missing:
        parts.append(f"missing: {missing.group(1).strip()}")
    return "; ".join(parts) if parts else (" ".join(text.split()) or type(err).__name__)


def open_bundle(
    bundle: str | Path, public_key: str | Path | None = None, device: str = "cpu"
) -> LoadedBundle:
    """Load a bundle for inference; with a public key its signature is verified first."""
    if public_key is not None:
        verify_bundle(bundle, public_key)
    return load_bundle(bundle, device)
