"""The repository's version changes, driven directly on an event loop (no server process):
a version being retired answers what it admitted first (text streams too), a reload swaps in
place, and a new version that fails verification never displaces the one serving."""

from __future__ import annotations

import asyncio
import json
import shutil
import time

import numpy as np
import pytest
from _repo_bundles import digits_classifier, own_logits, place_version
from _task_bundles import lm_bundle, tokenizer_file

from deepfleet.data import read_split
from deepfleet.data._text import load_tokenizer
from deepfleet.deploy._backends import BACKEND_TOLERANCE
from deepfleet.deploy.serve import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._generation import parse_generate
from deepfleet.deploy.serve._metrics import Metrics
from deepfleet.deploy.serve._repository import NotReady, Repository


@pytest.fixture(scope="module")
def bundles(digits_data, tmp_path_factory):
    base = tmp_path_factory.mktemp("drain-bundles")
    return {
        seed: digits_classifier(base / str(seed), digits_data, seed=seed, hidden=[32])
        for seed in (1, 2)
    }


@pytest.fixture(scope="module")
def x(digits_data) -> np.ndarray:
    return read_split(digits_data, "test").x[:4].numpy()


def _repository(root, **settings) -> Repository:
    return Repository(ServeConfig(bundle=str(root), timeout_s=5, **settings), Metrics())


def _states(repository: Repository) -> dict[str, tuple[str, str]]:
    return {r["version"]: (r["state"], r["reason"]) for r in repository.index()}


def test_an_unload_waits_for_the_requests_its_version_admitted(bundles, x, tmp_path):
    place_version(bundles[1], tmp_path, "alpha", 1)

    async def scenario():
        repository = _repository(tmp_path)
        await repository.start()
        served = repository.get("alpha")
        try:
            with served.inflight.admitted():
                unloading = asyncio.create_task(repository.unload("alpha"))
                await asyncio.sleep(0.3)
                assert not unloading.done()  # held by the request in flight
                assert _states(repository)["1"] == ("UNLOADING", "unloaded")
                with pytest.raises(NotReady):
                    repository.get("alpha")  # admits nothing new
                answer = await served.run(x, time.perf_counter(), repository.metrics)
            await asyncio.wait_for(unloading, 10)
            assert _states(repository)["1"] == ("UNAVAILABLE", "unloaded")
            return answer
        finally:
            await repository.stop()

    answer = asyncio.run(scenario())
    np.testing.assert_allclose(answer, own_logits(bundles[1], x), atol=BACKEND_TOLERANCE)


def test_a_changed_version_folder_reloads_in_place(bundles, x, tmp_path):
    folder = place_version(bundles[1], tmp_path, "alpha", 1)

    async def scenario():
        repository = _repository(tmp_path)
        await repository.start()
        try:
            before = repository.get("alpha", "1")
            shutil.rmtree(folder)
            place_version(bundles[2], tmp_path, "alpha", 1)
            await repository.load("alpha")
            after = repository.get("alpha", "1")
            assert after is not before and after.version == "1"
            assert after.bundle.version != before.bundle.version  # the weights' digest
            return await after.run(x, time.perf_counter(), repository.metrics)
        finally:
            await repository.stop()

    answer = asyncio.run(scenario())
    np.testing.assert_allclose(answer, own_logits(bundles[2], x), atol=BACKEND_TOLERANCE)


def test_a_newer_version_that_fails_verification_never_takes_over(bundles, tmp_path):
    place_version(bundles[1], tmp_path, "alpha", 1)

    async def scenario():
        repository = _repository(tmp_path)
        await repository.start()
        try:
            bad = place_version(bundles[2], tmp_path, "alpha", 2)
            (bad / "model.onnx").write_bytes(b"not what was exported")
            await repository.sync_all()  # what a poll does
            states = _states(repository)
            assert states["1"] == ("READY", "")
            assert states["2"][0] == "UNAVAILABLE"
            assert "model.onnx does not match its sha256" in states["2"][1]
            assert repository.get("alpha").version == "1"
            assert repository.versions("alpha") == ["1"]
            with pytest.raises(NotReady, match="version 2 is UNAVAILABLE"):
                repository.get("alpha", "2")
            for odd in ("02", "9" * 5000, "-1", "1.0"):  # never int() on what a path says
                with pytest.raises(RequestError, match="unknown version") as refused:
                    repository.get("alpha", odd)
                assert refused.value.status == 404 and len(refused.value.message) < 120
        finally:
            await repository.stop()

    asyncio.run(scenario())


def test_polling_follows_model_folders_that_come_and_go(bundles, tmp_path):
    place_version(bundles[1], tmp_path, "alpha", 1)

    async def scenario():
        repository = _repository(tmp_path)
        await repository.start()
        try:
            place_version(bundles[2], tmp_path, "beta", 7)
            shutil.rmtree(tmp_path / "alpha")
            await repository.sync_all()
            assert [(r["name"], r["version"], r["state"]) for r in repository.index()] == [
                ("beta", "7", "READY")
            ]
            with pytest.raises(RequestError, match="unknown model 'alpha'"):
                repository.get("alpha")
            assert repository.get(None).name == "beta"  # the only model answers /predict
        finally:
            await repository.stop()

    asyncio.run(scenario())


def test_an_unload_lets_a_running_text_stream_finish(tmp_path):
    tokenizer = tokenizer_file(tmp_path)
    vocab = load_tokenizer(tokenizer).get_vocab_size()
    lm_bundle(tmp_path / "lm" / "1", tokenizer, vocab=vocab, onnx=False)
    wanted = 120

    async def scenario():
        repository = _repository(tmp_path, max_new_tokens=wanted)
        await repository.start()
        try:
            served = repository.get("lm")
            generation = served.generation
            request = parse_generate({"prompt": "the quick", "max_new_tokens": wanted}, wanted)
            ids = generation.prompt_ids(request.prompt)
            with served.inflight.admitted():  # as the route holds it until the stream starts
                stream = await generation.start(request, ids, time.perf_counter())
            unloading = asyncio.create_task(repository.unload("lm"))
            events = [json.loads(e.decode().removeprefix("data: ")) async for e in stream]
            await asyncio.wait_for(unloading, 30)
            assert _states(repository)["1"] == ("UNAVAILABLE", "unloaded")
            return events
        finally:
            await repository.stop()

    events = asyncio.run(scenario())
    assert events[-1]["done"] is True, events[-1]  # not cut off by the unload
    assert events[-1]["tokens"] == len(events) - 1
