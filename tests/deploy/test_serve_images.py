"""Serving a bundle trained on encoded images: clients send the image files themselves (a
BYTES tensor) as base64 JSON, in the binary tensor data extension (tritonclient.http) and
over gRPC (tritonclient.grpc's raw contents and the typed bytes_contents). A real `deepfleet
serve` in a subprocess; the answer must equal the bundle's own evaluation path in this
process (decode + resize + centre crop + normalise, then the model) and the answer for the
same images sent as decoded pixels. Broken files and decompression bombs are 400s naming
the input and the element."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib

import grpc
import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as triton
from _deploy_helpers import IMAGE_SIZE, IMAGE_TRANSFORM, Server, image_bundle
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from deepfleet.data import Preprocessing
from deepfleet.deploy import load_bundle
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._images import split_elements
from deepfleet.deploy.serve._protocol import InputSpec, model_input

pytestmark = pytest.mark.e2e
SIZE, IMAGE = IMAGE_SIZE, IMAGE_TRANSFORM


def _files() -> list[bytes]:
    """A JPEG large enough for reduced-scale decoding, a PNG, a WebP, a greyscale PNG."""
    rng = np.random.default_rng(0)
    out = []
    for (h, w), fmt, mode in [
        ((200, 300), "JPEG", "RGB"),
        ((70, 50), "PNG", "RGB"),
        ((60, 90), "WEBP", "RGB"),
        ((40, 41), "PNG", "L"),
    ]:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        pixels[: h // 2] //= 3  # structure, so the crop matters
        buffer = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buffer, fmt)
        out.append(buffer.getvalue())
    return out


def _bomb_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height pixels (the data never follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return image_bundle(tmp_path_factory.mktemp("img"))


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    log = tmp_path_factory.mktemp("img-serve") / "server.log"
    with Server(bundle, log=log, token="t0ken-0123456789abcdef", grpc=True) as srv:
        yield srv


@pytest.fixture(scope="module")
def expected(bundle) -> tuple[list[bytes], np.ndarray]:
    """The files and their logits by the in-process evaluation path: the bundle's
    preprocessing of the raw bytes (what predict applies to encoded shards), then its model."""
    files = _files()
    loaded = load_bundle(bundle)
    x = loaded.preprocessing.apply(np.array(files, dtype=object))
    assert x.shape == (len(files), 3, *SIZE) and x.dtype == np.float32
    with torch.no_grad():
        logits = loaded.model(torch.from_numpy(x)).numpy()
    return files, logits


def _logits(answer: dict) -> np.ndarray:
    out = {o["name"]: o for o in answer["outputs"]}["logits"]
    return np.asarray(out["data"], np.float32).reshape(out["shape"])


def test_metadata_declares_bytes_and_the_transform(server):
    meta = httpx.get(f"{server.url}/v2/models/pictures", headers=server.headers).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "BYTES", "shape": [-1]}]
    assert meta["parameters"]["pixels_shape"] == "[-1, 3, 16, 16]"
    assert json.loads(meta["parameters"]["image_transform"]) == IMAGE


def test_base64_json_equals_the_evaluation_path_and_the_pixels(server, expected, bundle):
    files, logits = expected
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "BYTES",
                "shape": [len(files), 1],
                "data": [base64.b64encode(f).decode() for f in files],
            }
        ],
        "outputs": [{"name": "logits"}],
    }
    r = httpx.post(f"{server.url}/v2/models/pictures/infer", json=body, headers=server.headers)
    assert r.status_code == 200, r.text
    got = _logits(r.json())
    np.testing.assert_allclose(got, logits, atol=1e-4, rtol=1e-4)
    assert len({tuple(row) for row in got.round(4)}) == len(files)  # every image differs
    # The same images as decoded pixels (UINT8 [N, 3, 16, 16]) get the same answer.
    pixels = load_bundle(bundle).preprocessing.decode_images(np.array(files, dtype=object))
    body["inputs"][0] |= {
        "datatype": "UINT8",
        "shape": list(pixels.shape),
        "data": pixels.ravel().tolist(),
    }
    r = httpx.post(f"{server.url}/v2/models/pictures/infer", json=body, headers=server.headers)
    np.testing.assert_allclose(_logits(r.json()), got, atol=1e-6)


def test_tritonclient_binary_bytes_input(server, expected):
    files, logits = expected
    client = triton.InferenceServerClient(
        server.url.removeprefix("http://"), connection_timeout=30, network_timeout=30
    )
    try:
        tensor = triton.InferInput("input", [len(files)], "BYTES")
        tensor.set_data_from_numpy(np.array(files, dtype=object), binary_data=True)
        result = client.infer(
            "pictures",
            [tensor],
            outputs=[triton.InferRequestedOutput("logits", binary_data=True)],
            headers=server.headers,
        )
        np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-4, rtol=1e-4)
        # A broken file among good ones: 400 naming the input and the element.
        broken = [files[0], files[1][:60], files[2]]
        tensor = triton.InferInput("input", [3], "BYTES")
        tensor.set_data_from_numpy(np.array(broken, dtype=object), binary_data=True)
        with pytest.raises(InferenceServerException) as err:
            client.infer("pictures", [tensor], headers=server.headers)
        assert "input 'input': element 1: not a decodable image" in str(err.value)
    finally:
        client.close()


def test_tritonclient_grpc_raw_and_typed_bytes(server, expected):
    files, logits = expected
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        tensor = grpcclient.InferInput("input", [len(files)], "BYTES")
        tensor.set_data_from_numpy(np.array(files, dtype=object))
        metadata = {"authorization": "Bearer t0ken-0123456789abcdef"}
        result = client.infer("pictures", [tensor], headers=metadata)
        np.testing.assert_allclose(result.as_numpy("logits"), logits, atol=1e-4, rtol=1e-4)
    finally:
        client.close()
    # The typed field: one bytes_contents entry per file.
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="pictures")
        request.inputs.add(name="input", datatype="BYTES", shape=[2])
        request.inputs[0].contents.bytes_contents.extend(files[2:])
        request.outputs.add(name="logits")
        answer = stub.ModelInfer(
            request, metadata=[("authorization", "Bearer t0ken-0123456789abcdef")]
        )
        got = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(2, -1)
        np.testing.assert_allclose(got, logits[2:], atol=1e-4, rtol=1e-4)
        request.inputs[0].contents.bytes_contents[1] = _bomb_png(20_000, 20_000)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, metadata=[("authorization", "Bearer t0ken-0123456789abcdef")])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "element 1" in err.value.details() and "decompression bomb" in err.value.details()


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        ([_bomb_png(10_000, 10_000)], [1], "element 0: 10000x10000 pixels exceed the limit"),
        ([_bomb_png(30_000, 30_000)], [1], "element 0: not a decodable image"),
        ([b"not an image at all"], [1], "element 0: not a decodable image"),
        (["%%%not base64"], [1], "element 0 is not base64"),
        ([7], [1], "element 0 must be a base64 string"),
        ([b"x", b"y"], [3], "2 BYTES elements but the shape says 3 images"),
        ([b"x"], [1, 2], "shape [1, 2] of BYTES must be [N] or [N, 1]"),
    ],
)
def test_bad_images_are_400s_naming_the_element(server, data, shape, message):
    values = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in data]
    body = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": shape, "data": values}]}
    r = httpx.post(f"{server.url}/v2/models/pictures/infer", json=body, headers=server.headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "input 'input'" in r.json()["error"] and message in r.json()["error"]


def test_the_binary_layout_and_a_model_not_trained_on_images():
    elements = [b"", b"abc", bytes(range(256))]
    assert (
        split_elements(serialize_byte_tensor(np.array(elements, dtype=object)).item(), "x")
        == elements
    )
    with pytest.raises(RequestError, match="says 9 bytes but only 2 follow"):
        split_elements(struct.pack("<I", 9) + b"ab", "x")
    with pytest.raises(RequestError, match='datatype "BYTES" is not supported; send FP32'):
        model_input("input", "BYTES", [1], ["aGk="], InputSpec((4,), 8, Preprocessing()))


def test_image_bodies_are_bounded_like_any_other(server):
    """Files travel in the body, so --max-body-kb (8 MiB by default) bounds them: 413."""
    big = base64.b64encode(bytes(7 << 20)).decode()  # 9.3 MB of base64
    body = {"inputs": [{"name": "input", "datatype": "BYTES", "shape": [1], "data": [big]}]}
    r = httpx.post(f"{server.url}/v2/models/pictures/infer", json=body, headers=server.headers)
    assert r.status_code == 413 and "error" in r.json()
