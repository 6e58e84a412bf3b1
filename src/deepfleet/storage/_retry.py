"""Transient object-storage failures retried with exponential backoff; the rest turned into
one line that names the problem.

A dropped connection, a 5xx or throttling is retried (the first one is logged, once per
operation); a missing bucket, a missing object or refused credentials is a StorageError at
once, because waiting does not fix it. Messages name the redacted URL and the cause, never
a credential (pyarrow's messages carry the bucket, key and endpoint, not the keys).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from deepfleet.errors import StorageError, UserError

log = logging.getLogger("deepfleet.storage")
T = TypeVar("T")

# Substrings of the AWS SDK's errors (as pyarrow reports them) and of socket errors.
TRANSIENT = (
    "NETWORK_CONNECTION",
    "curlCode",
    "HTTP status 5",
    "SLOW_DOWN",
    "SlowDown",
    "THROTTL",
    "Throttl",
    "SERVICE_UNAVAILABLE",
    "INTERNAL_FAILURE",
    "REQUEST_TIMEOUT",
    "RequestTimeout",
    "Connection reset",
    "Broken pipe",
    "timed out",
)
DENIED = (
    "ACCESS_DENIED",
    "AccessDenied",
    "INVALID_ACCESS_KEY_ID",
    "InvalidAccessKeyId",
    "SIGNATURE_DOES_NOT_MATCH",
    "SignatureDoesNotMatch",
    "MISSING_AUTHENTICATION_TOKEN",
    "EXPIRED_TOKEN",
    "HTTP status 403",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Attempts and backoff: waits of base, 2 base, 4 base, ... up to cap, with jitter.
    The defaults ride out about 30 s of an unreachable server."""

    attempts: int = 10
    base: float = 0.25
    cap: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * 2**attempt) * (0.5 + random.random() / 2)


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def is_transient(err: BaseException) -> bool:
    if isinstance(err, (ConnectionError, TimeoutError)):
        return True
    if isinstance(err, FileNotFoundError) or not isinstance(err, OSError):
        return False
    text = str(err)
    return any(m in text for m in TRANSIENT) and not any(m in text for m in DENIED)


def as_storage_error(err: BaseException, where: str) -> StorageError | None:
    """A user-fixable storage failure as one line; None for anything else."""
    if isinstance(err, UserError):
        return err if isinstance(err, StorageError) else StorageError(where, str(err))
    if isinstance(err, FileNotFoundError):
        return StorageError(where, "no such object or folder")
    if isinstance(err, PermissionError) or any(m in str(err) for m in DENIED):
        return StorageError(
            where,
            "access denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            "~/.aws, or the instance role) and the bucket's permissions",
        )
    if isinstance(err, OSError) and "NO_SUCH_BUCKET" in str(err):
        return StorageError(where, "the bucket does not exist")
    return None


def retrying(op: Callable[[], T], where: str, policy: RetryPolicy = RetryPolicy()) -> T:
    """`op()`, again after transient failures; a StorageError when it cannot succeed."""
    for attempt in range(policy.attempts):
        try:
            result = op()
        except Exception as err:  # noqa: BLE001 - classified below, re-raised otherwise
            if is_transient(err) and attempt + 1 < policy.attempts:
                if attempt == 0:
                    log.warning(
                        "storage: %s: %s; retrying (up to %d attempts)",
                        where,
                        first_line(err),
                        policy.attempts,
                    )
                time.sleep(policy.delay(attempt))
                continue
            if is_transient(err):
                raise StorageError(
                    where, f"unreachable after {policy.attempts} attempts: {first_line(err)}"
                ) from None
            mapped = as_storage_error(err, where)
            if mapped is None:
                raise
            raise mapped from None
        if attempt:
            log.info("storage: %s: succeeded after %d attempts", where, attempt + 1)
        return result
    raise AssertionError("unreachable")  # pragma: no cover
