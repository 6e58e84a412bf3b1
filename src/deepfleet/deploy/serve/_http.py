"""HTTP helpers the routes share: a bounded body read, JSON answers, and inference answers
with or without binary tensor data."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from starlette.responses import JSONResponse, Response

from deepfleet.deploy.serve._binary import join_response
from deepfleet.deploy.serve._errors import RequestError


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":  # compressed bodies would slip past the size bound
        raise RequestError(
            415, f"Content-Encoding {encoding[:40]!r} is not supported; send the body as is"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError(
            413, f"request body of {length} bytes exceeds the limit of {limit} bytes"
        )
    chunks, size = [], 0
    async for chunk in request.stream():  # also bounds chunked bodies without a length
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(obj, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(obj, status_code=status, headers=headers)


def infer_answer(answer: dict[str, Any], parts: list[bytes]) -> Response:
    """An inference answer: JSON alone, or JSON then the binary outputs' bytes."""
    if not parts:
        return json_response(answer)
    # The same compact encoding JSONResponse writes.
    json_part = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
    body, headers = join_response(json_part, parts)
    return Response(body, headers=headers, media_type=headers.pop("Content-Type"))
