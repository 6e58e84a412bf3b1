"""Encryption at rest: Parquet modular encryption with a key-wrapping KMS client.

Every shard gets fresh data keys from Arrow (AES-GCM); those are wrapped with one master key
that lives in a local key file (64 hex characters, mode 0600) or in an environment variable.
The master key never enters a shard or the manifest; the manifest keeps only its key id, a
one-way fingerprint, so a wrong key is reported before any shard is opened.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet.encryption as pe
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from deepfleet.errors import UserError

KEY_ENV = "DEEPFLEET_DATA_KEY"
KEY_BYTES = 32
ALGORITHM = "AES_GCM_V1"
_NONCE = 12


@dataclass(frozen=True)
class DataKey:
    """A master key in memory; `key_id` is the fingerprint stored in manifests."""

    secret: bytes
    origin: str

    @property
    def key_id(self) -> str:
        digest = hashlib.sha256(b"deepfleet data key id\0" + self.secret).hexdigest()
        return f"dfk-{digest[:16]}"

    def authenticate(self, data: bytes) -> str:
        """HMAC-SHA256 of `data` under a key derived from this one (the manifest's seal)."""
        mac_key = hashlib.sha256(b"deepfleet manifest hmac\0" + self.secret).digest()
        return hmac.new(mac_key, data, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never print the secret
        return f"DataKey({self.key_id}, from {self.origin})"


def _parse_key(text: str, origin: str) -> DataKey:
    text = text.strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) != KEY_BYTES:
        raise UserError(
            f"{origin}: not a data key (expected {KEY_BYTES * 2} hex characters; "
            "create one with `deepfleet keys new --out PATH`)"
        )
    return DataKey(secret, origin)


def new_data_key(path: str | Path) -> Path:
    """Write a new random 256-bit data key to `path` (mode 0600); never overwrites a file."""
    path = Path(path)
    if path.exists():
        raise UserError(f"{path}: already exists; a key file is never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600; link() then publishes it only if `path` is still free.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(os.urandom(KEY_BYTES).hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise UserError(f"{path}: already exists; a key file is never overwritten") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load_data_key(spec: str | Path | bytes | DataKey | None) -> DataKey | None:
    """A key from a file path, `env:NAME`, raw bytes, or (None) $DEEPFLEET_DATA_KEY if set."""
    if spec is None:
        return _parse_key(os.environ[KEY_ENV], f"${KEY_ENV}") if os.environ.get(KEY_ENV) else None
    if isinstance(spec, DataKey):
        return spec
    if isinstance(spec, bytes):
        if len(spec) != KEY_BYTES:
            raise UserError(f"a data key has {KEY_BYTES} bytes, got {len(spec)}")
        return DataKey(spec, "memory")
    text = str(spec)
    if text.startswith("env:"):
        name = text[4:]
        if not os.environ.get(name):
            raise UserError(f"data key: environment variable {name} is not set")
        return _parse_key(os.environ[name], f"${name}")
    path = Path(text)
    if not path.is_file():
        raise UserError(f"{path}: data key file not found")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise UserError(f"{path}: key file is readable by other users; run chmod 600 {path}")
    return _parse_key(path.read_text(encoding="ascii", errors="replace"), str(path))


class LocalKmsClient(pe.KmsClient):
    """Wraps and unwraps Arrow's per-file keys with master keys held in this process."""

    def __init__(self, config: pe.KmsConnectionConfig) -> None:
        pe.KmsClient.__init__(self)
        self._masters = {k: bytes.fromhex(v) for k, v in config.custom_kms_conf.items()}

    def _master(self, key_id: str) -> bytes:
        if key_id not in self._masters:
            raise ValueError(f"no master key {key_id} in this process")
        return self._masters[key_id]

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(self._master(master_key_identifier)).encrypt(
            nonce, key_bytes, master_key_identifier.encode()
        )
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        raw = base64.b64decode(wrapped_key)
        try:
            return AESGCM(self._master(master_key_identifier)).decrypt(
                raw[:_NONCE], raw[_NONCE:], master_key_identifier.encode()
            )
        except InvalidTag:
            raise ValueError("the data key does not unwrap this file's keys") from None


def _factory_and_config(key: DataKey) -> tuple[pe.CryptoFactory, pe.KmsConnectionConfig]:
    config = pe.KmsConnectionConfig(custom_kms_conf={key.key_id: key.secret.hex()})
    return pe.CryptoFactory(LocalKmsClient), config


def encryption_properties(key: DataKey):
    """Every column and the footer encrypted (AES-GCM) under fresh keys wrapped by `key`."""
    factory, config = _factory_and_config(key)
    return factory.file_encryption_properties(
        config,
        pe.EncryptionConfiguration(
            footer_key=key.key_id,
            uniform_encryption=True,
            encryption_algorithm=ALGORITHM,
            data_key_length_bits=256,
        ),
    )


def decryption_properties(key: DataKey):
    factory, config = _factory_and_config(key)
    return factory.file_decryption_properties(config, pe.DecryptionConfiguration())


def check_key(encryption: dict | None, key: DataKey | None, where: str) -> DataKey | None:
    """The key to read a data set with; a clear error when it is missing or not the right one."""
    if not encryption:
        return None
    if key is None:
        raise UserError(
            f"{where}: the shards are encrypted; give the data key (a key file, "
            f"env:NAME, or ${KEY_ENV})"
        )
    if key.key_id != encryption["key_id"]:
        raise UserError(
            f"{where}: wrong data key ({key.origin} is {key.key_id}, the shards "
            f"need {encryption['key_id']})"
        )
    return key
