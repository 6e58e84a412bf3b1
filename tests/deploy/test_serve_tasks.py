"""The server per task: metadata and answers follow the bundle's task, and a causal LM with a
tokenizer streams generated text as Server-Sent Events behind the same token, body limit
and timeout as every other route."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
import torch
from _task_bundles import (
    CONTEXT,
    lm_bundle,
    multilabel_bundle,
    regression_bundle,
    tokenizer_file,
)
from fastapi.testclient import TestClient

from deepfleet.data._text import load_tokenizer
from deepfleet.deploy import load_bundle
from deepfleet.deploy.serve import ServeConfig, create_app

TOKEN = secrets.token_hex(16)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAP = 24


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    base = tmp_path_factory.mktemp("task-bundles")
    tokenizer = tokenizer_file(base)
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    return {
        "lm": lm_bundle(base / "lm", tokenizer, vocab=vocab),
        "bare_lm": lm_bundle(base / "bare_lm", None, vocab=vocab, onnx=False),
        "reg": regression_bundle(base / "reg", onnx=False),
        "tags": multilabel_bundle(base / "tags", onnx=False),
    }


def _client(bundle, **settings) -> TestClient:
    config = ServeConfig(bundle=str(bundle), token=TOKEN, max_body_bytes=4096, **settings)
    return TestClient(create_app(config))


@pytest.fixture(scope="module")
def lm(bundles):
    with _client(bundles["lm"], max_new_tokens=CAP) as client:
        yield client


def _events(reply) -> list[dict]:
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    chunks = [c for c in reply.text.split("\n\n") if c]
    assert all(c.startswith("data: ") for c in chunks), reply.text
    return [json.loads(c.removeprefix("data: ")) for c in chunks]


def _generate(client, path="/v2/models/lm/generate", headers=AUTH, **body):
    return client.post(path, json=body, headers=headers)


def test_a_last_character_left_unfinished_is_handed_over_at_the_end(bundles):
    from deepfleet.deploy.serve._generation import _TextStream

    tokenizer = load_tokenizer(bundles["lm"] / "tokenizer.json")
    ids = tokenizer.encode("x \u20ac\u4e2d\U0001f600").ids  # 3- and 4-byte characters
    cut = next(n for n in range(1, len(ids)) if tokenizer.decode(ids[:n]).endswith("\ufffd"))
    stream = _TextStream(tokenizer)
    sent = "".join(stream.add(token) for token in ids[:cut])
    assert not sent.endswith("\ufffd")
    assert sent + stream.rest() == tokenizer.decode(ids[:cut])
    assert stream.rest().endswith("\ufffd")


def test_generation_is_the_same_for_a_seed_and_bounded(lm, bundles):
    body = {"prompt": "the quick brown", "max_new_tokens": 12, "temperature": 0.8, "top_k": 20}
    first = _events(_generate(lm, **body, seed=3))
    again = _events(_generate(lm, "/generate", **body, seed=3))  # the one-bundle alias
    assert first == again
    done = first[-1]
    tokens = [e["token"] for e in first[:-1]]
    assert done["done"] is True and done["tokens"] == len(tokens) <= 12
    # the texts of all events, the last one's included, add up to the decoded tokens
    tokenizer = load_tokenizer(bundles["lm"] / "tokenizer.json")
    assert "".join(e["text"] for e in first) == tokenizer.decode(tokens)
    other = [_events(_generate(lm, **body, seed=s)) for s in (4, 5)]
    assert any(o != first for o in other)


def test_greedy_generation_matches_the_library(lm, bundles):
    from deepfleet.deploy import generate

    bundle = load_bundle(bundles["lm"])
    tokenizer = bundle.tokenizer
    prompt = tokenizer.encode("a penny saved").ids
    stop = tokenizer.token_to_id("<|endoftext|>")
    expected = list(generate(bundle.model, prompt, 10, 0.0, 0, 0, CONTEXT, stop_token=stop))
    events = _events(_generate(lm, prompt="a penny saved", max_new_tokens=10, temperature=0))
    assert [e["token"] for e in events[:-1]] == expected


def test_the_cap_and_the_context_length_are_enforced(lm):
    over = _generate(lm, prompt="the", max_new_tokens=CAP + 1)
    assert over.status_code == 400 and f"limit is {CAP}" in over.json()["error"]
    at_cap = _events(_generate(lm, prompt="the", max_new_tokens=CAP, temperature=1.0))
    assert at_cap[-1]["tokens"] <= CAP
    long = " ".join(["fortune favours the bold"] * CONTEXT)
    reply = _generate(lm, prompt=long)
    assert reply.status_code == 400
    assert f"context length is {CONTEXT} tokens" in reply.json()["error"]


@pytest.mark.parametrize(
    "body, message",
    [
        ({"prompt": ""}, "'prompt' is empty"),
        ({}, "'prompt' must be a string"),
        ({"prompt": 5}, "'prompt' must be a string"),
        ({"prompt": "a", "max_new_tokens": 0}, "'max_new_tokens' must be in 1.."),
        ({"prompt": "a", "max_new_tokens": True}, "must be an integer"),
        ({"prompt": "a", "temperature": -1}, "'temperature' must be a number >= 0"),
        ({"prompt": "a", "temperature": "hot"}, "'temperature'"),
        ({"prompt": "a", "top_k": -1}, "'top_k' must be in 0.."),
        ({"prompt": "a", "seed": 1.5}, "'seed' must be an integer"),
        ({"prompt": "a", "stream": False}, 'unknown field "stream"'),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_generate_bodies_get_400(lm, body, message):
    reply = lm.post("/v2/models/lm/generate", json=body, headers=AUTH)
    assert reply.status_code == 400, reply.text
    assert message in reply.json()["error"]


def test_generate_needs_the_token_and_fits_the_body_limit(lm):
    for path in ("/v2/models/lm/generate", "/generate"):
        reply = _generate(lm, path, headers={}, prompt="the")
        assert reply.status_code == 401
        assert reply.json() == {"error": "missing or wrong bearer token"}
    big = lm.post(
        "/generate", content=json.dumps({"prompt": "x" * 5000}), headers=AUTH
    )  # over the 4 KiB body limit
    assert big.status_code == 413
    assert _generate(lm, "/v2/models/other/generate", prompt="a").status_code == 404


def test_models_that_do_not_generate_get_404(bundles):
    for name, reason in (("reg", "regression model"), ("bare_lm", "no tokenizer.json")):
        with _client(bundles[name]) as client:
            reply = client.post("/generate", json={"prompt": "a"}, headers=AUTH)
            assert reply.status_code == 404 and reason in reply.json()["error"]


def test_causal_lm_metadata_infer_and_predict(lm, bundles):
    meta = lm.get("/v2/models/lm", headers=AUTH).json()
    assert meta["inputs"] == [{"name": "input", "datatype": "INT32", "shape": [-1, CONTEXT]}]
    vocab = meta["parameters"]["vocab_size"]
    assert meta["outputs"] == [
        {"name": "next_token", "datatype": "INT64", "shape": [-1]},
        {"name": "next_token_logits", "datatype": "FP32", "shape": [-1, vocab]},
    ]
    assert meta["parameters"]["task"] == "causal_lm"
    assert meta["parameters"]["generate_context_length"] == CONTEXT
    assert meta["parameters"]["generate_max_new_tokens"] == CAP
    ids = np.random.default_rng(0).integers(0, vocab, size=(2, CONTEXT))
    body = {
        "inputs": [
            {
                "name": "input",
                "shape": [2, CONTEXT],
                "datatype": "INT64",
                "data": ids.ravel().tolist(),
            }
        ]
    }
    answer = lm.post("/v2/models/lm/infer", json=body, headers=AUTH).json()
    bundle = load_bundle(bundles["lm"])
    with torch.no_grad():
        logits = bundle.model(torch.from_numpy(ids))[:, -1].numpy()
    assert [o["name"] for o in answer["outputs"]] == ["next_token"]  # logits only when asked
    assert answer["outputs"][0]["data"] == logits.argmax(1).tolist()
    asked = lm.post(
        "/v2/models/lm/infer",
        json={**body, "outputs": [{"name": "next_token_logits"}]},
        headers=AUTH,
    ).json()["outputs"][0]
    assert asked["shape"] == [2, vocab]
    np.testing.assert_allclose(np.reshape(asked["data"], (2, vocab)), logits, atol=1e-4)
    predicted = lm.post("/predict", json={"instances": ids.tolist()}, headers=AUTH).json()
    rows = predicted["predictions"]
    assert [r["next_token"] for r in rows] == logits.argmax(1).tolist()
    assert rows[0]["next_text"] == bundle.tokenizer.decode([rows[0]["next_token"]])
    bad = {"instances": [[vocab] * CONTEXT]}
    reply = lm.post("/predict", json=bad, headers=AUTH)
    assert reply.status_code == 400 and "vocabulary" in reply.json()["error"]


def test_regression_answers_values_in_target_units(bundles):
    bundle = load_bundle(bundles["reg"])
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    with torch.no_grad():
        expected = bundle.model(torch.from_numpy(x)).numpy()
    with _client(bundles["reg"]) as client:
        meta = client.get("/v2/models/reg", headers=AUTH).json()
        assert meta["outputs"] == [{"name": "values", "datatype": "FP32", "shape": [-1, 2]}]
        assert meta["parameters"]["task"] == "regression"
        body = {
            "inputs": [
                {"name": "input", "shape": [3, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        out = client.post("/v2/models/reg/infer", json=body, headers=AUTH).json()["outputs"]
        np.testing.assert_allclose(np.reshape(out[0]["data"], (3, 2)), expected, atol=1e-5)
        rows = client.post("/predict", json={"instances": x.tolist()}, headers=AUTH).json()
        got = [[r["value_height"], r["value_weight"]] for r in rows["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_multilabel_answers_probabilities_and_labels(bundles):
    bundle = load_bundle(bundles["tags"])
    x = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32) * 5
    with torch.no_grad():
        probs = torch.sigmoid(bundle.model(torch.from_numpy(x))).numpy()
    names = ["red", "green", "blue"]
    with _client(bundles["tags"]) as client:
        meta = client.get("/v2/models/tags", headers=AUTH).json()
        assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities", "labels"]
        body = {
            "inputs": [
                {"name": "input", "shape": [4, 4], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        out = {
            o["name"]: o
            for o in client.post("/v2/models/tags/infer", json=body, headers=AUTH).json()["outputs"]
        }
        np.testing.assert_allclose(
            np.reshape(out["probabilities"]["data"], (4, 3)), probs, atol=1e-5
        )
        assert out["labels"]["datatype"] == "INT8"
        assert (
            np.reshape(out["labels"]["data"], (4, 3)).tolist()
            == (probs >= 0.5).astype(int).tolist()
        )
        rows = client.post("/predict", json={"instances": x.tolist()}, headers=AUTH).json()
        for row, p in zip(rows["predictions"], probs, strict=True):
            assert row["labels"] == [n for n, q in zip(names, p, strict=True) if q >= 0.5]
            assert row["prob_red"] == pytest.approx(float(p[0]), abs=1e-5)


def _slow_generate(first_delay: float, gap: float):
    import time

    def fake(model, ids, max_new_tokens, *args, **kwargs):
        time.sleep(first_delay)
        for i in range(max_new_tokens):
            if i:
                time.sleep(gap)
            yield 1

    return fake


def test_generate_times_out_before_the_first_token_with_503(bundles, monkeypatch):
    from deepfleet.deploy.serve import _generation

    monkeypatch.setattr(_generation, "generate", _slow_generate(1.0, 0.0))
    with _client(bundles["lm"], timeout_s=0.2) as client:
        reply = client.post("/generate", json={"prompt": "the"}, headers=AUTH)
        assert reply.status_code == 503 and "timed out after 0.2s" in reply.json()["error"]
        assert reply.headers["retry-after"] == "1"


def test_a_stalled_stream_ends_with_an_error_event(bundles, monkeypatch):
    from deepfleet.deploy.serve import _generation

    monkeypatch.setattr(_generation, "generate", _slow_generate(0.0, 1.0))
    with _client(bundles["lm"], timeout_s=0.3) as client:
        events = _events(
            client.post("/generate", json={"prompt": "the", "max_new_tokens": 3}, headers=AUTH)
        )
        assert events[0]["token"] == 1
        assert "timed out after 0.3s waiting for a token" in events[-1]["error"]
