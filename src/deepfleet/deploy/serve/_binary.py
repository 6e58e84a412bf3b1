"""The byte layout of the OIP binary tensor data extension, as Triton documents it
(docs/protocol/extension_binary_data.md).

A request or answer body is a JSON object followed by raw tensor bytes; the header
`Inference-Header-Content-Length` says how long the JSON part is. A tensor whose data travels
in the binary part says so in the JSON with `parameters.binary_data_size`, and tensors take
their bytes from the binary part in the order they are listed. The bytes are the tensor,
row-major and little-endian (what numpy's tobytes writes on every platform deepfleet runs on).

Only the layout lives here; _protocol decides what the bytes of each tensor mean.
"""

from __future__ import annotations

from deepfleet.deploy.serve._errors import RequestError

HEADER = "Inference-Header-Content-Length"
CONTENT_TYPE = "application/octet-stream"


class BinaryData:
    """The binary part of a request, handed out to the inputs in the order they are listed."""

    def __init__(self, data: bytes | memoryview):
        self._data = memoryview(data)
        self._taken = 0

    def take(self, size: int, what: str) -> memoryview:
        left = len(self._data) - self._taken
        if size > left:
            raise RequestError(
                400,
                f"{what}: binary_data_size is {size} but only {left} bytes of binary data "
                f"follow the JSON (is the {HEADER} header right?)",
            )
        chunk = self._data[self._taken : self._taken + size]
        self._taken += size
        return chunk

    def check_all_taken(self) -> None:
        left = len(self._data) - self._taken
        if left:
            raise RequestError(
                400,
                f"{left} bytes of binary data after the JSON belong to no input "
                "(the inputs' binary_data_size add up to less)",
            )


def split_request(body: bytes, header: str | None) -> tuple[bytes, BinaryData]:
    """(JSON part, binary part) of a request body; without the header the body is all JSON."""
    if header is None:
        return body, BinaryData(b"")
    length = header.strip()
    if not length.isdigit() or int(length) > len(body) or int(length) == 0:
        raise RequestError(
            400,
            f"{HEADER} must be the length of the JSON part, 1..{len(body)} bytes "
            f"(the body's length), got {header[:40]!r}",
        )
    view = memoryview(body)
    return bytes(view[: int(length)]), BinaryData(view[int(length) :])


def join_response(json_part: bytes, parts: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """An answer body with binary outputs after its JSON part, and the headers that say so."""
    headers = {HEADER: str(len(json_part)), "Content-Type": CONTENT_TYPE}
    return b"".join([json_part, *parts]), headers
