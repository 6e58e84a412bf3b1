"""Text generation for a served causal LM with a tokenizer: the request body, bounded
concurrency, and the Server-Sent Events stream.

Each generation runs in a thread of its own pool (one per replica), token by token through
deepfleet.deploy.generate (key/value cache for the zoo gpt). At most `replicas` generations
run at once and at most `max_queue` wait for a turn; beyond that 503. The request timeout
bounds the wait for a turn plus the first token (then 503, as JSON); once the stream has
begun it bounds the time between two tokens (then an error event ends the stream). A client
that goes away stops its generation at the next token.

Events: `data: {"token": id, "text": "..."}` per token (text is what the token adds to the
decoded continuation; "" while a multi-byte character is still incomplete), then
`data: {"done": true, "tokens": n, "finish_reason": "length" | "stop", "text": "..."}`, whose
text is whatever was held back (a last character whose bytes never completed, as U+FFFD), so
the texts of all events joined are the decoded continuation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from deepfleet.data._text import END_OF_TEXT
from deepfleet.deploy._bundle import LoadedBundle
from deepfleet.deploy._generate import generate
from deepfleet.deploy.serve._config import ServeConfig
from deepfleet.deploy.serve._errors import RequestError
from deepfleet.deploy.serve._metrics import Metrics

DEFAULT_NEW_TOKENS = 64
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int
    seed: int


def _int(payload: dict, key: str, default: int, low: int, high: int, limit: str = "") -> int:
    value = payload.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(400, f"'{key}' must be an integer")
    if not low <= value <= high:
        raise RequestError(400, f"'{key}' must be in {low}..{high}{limit}, got {value}")
    return value


def parse_generate(payload: Any, cap: int) -> GenerateRequest:
    """{prompt, max_new_tokens, temperature, top_k, seed} with every field checked."""
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object with a 'prompt' string")
    unknown = sorted(set(payload) - {"prompt", "max_new_tokens", "temperature", "top_k", "seed"})
    if unknown:
        raise RequestError(400, f"unknown field {json.dumps(unknown[0])[:60]}")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError(400, "'prompt' must be a string")
    if not prompt:
        raise RequestError(400, "'prompt' is empty")
    max_new = _int(
        payload,
        "max_new_tokens",
        min(DEFAULT_NEW_TOKENS, cap),
        1,
        cap,
        " (the server's limit is " + str(cap) + ")",
    )
    temperature = payload.get("temperature", 1.0)
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
        or temperature < 0
    ):
        raise RequestError(400, "'temperature' must be a number >= 0")
    top_k = _int(payload, "top_k", 0, 0, 1 << 31)
    seed = _int(payload, "seed", 0, 0, MAX_SEED)
    return GenerateRequest(prompt, max_new, float(temperature), top_k, seed)


class _TextStream:
    """Decodes the continuation as it grows; a token's text is what it adds."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._text = ""

    def add(self, token: int) -> str:
        self._ids.append(token)
        text = self._tokenizer.decode(self._ids)
        if text.endswith("\ufffd"):  # a character whose bytes are not all there yet
            return ""
        new, self._text = text[len(self._text) :], text
        return new

    def rest(self) -> str:
        """What the continuation's text holds beyond what was sent: the bytes of a last
        character that never completed, decoded as U+FFFD ("" when nothing is held back)."""
        return self._tokenizer.decode(self._ids)[len(self._text) :]


class Generation:
    """Generation for one served causal LM bundle with a tokenizer."""

    def __init__(self, bundle: LoadedBundle, config: ServeConfig, metrics: Metrics) -> None:
        self.bundle = bundle
        self.tokenizer = bundle.tokenizer
        self.context = bundle.input_shape[0]
        self.stop_token = self.tokenizer.token_to_id(END_OF_TEXT)
        self._config = config
        self._metrics = metrics
        self._slots = asyncio.Semaphore(config.replicas)
        self._waiting = 0
        self._executor = ThreadPoolExecutor(config.replicas, thread_name_prefix="generate")
        self._running: set[threading.Event] = set()

    @property
    def active(self) -> int:
        """Generations running (their streams not finished): a version being retired waits
        for them, as it waits for its infer requests."""
        return len(self._running)

    def stop(self) -> None:
        """Stop every generation at its next token and wait for the threads."""
        for cancel in list(self._running):
            cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)

    def prompt_ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt).ids
        if not ids:
            raise RequestError(400, "'prompt' gives no tokens")
        if len(ids) > self.context:
            raise RequestError(
                400,
                f"'prompt' is {len(ids)} tokens; the model's context length is {self.context} "
                "tokens",
            )
        return ids

    def _busy(self, message: str, reason: str) -> RequestError:
        self._metrics.rejected.labels(reason).inc()
        return RequestError(503, message, {"Retry-After": "1"})

    async def _acquire(self, remaining: float) -> None:
        if self._waiting >= self._config.max_queue:
            raise self._busy(
                f"server busy: {self._waiting} generate requests are already waiting", "queue_full"
            )
        self._waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), max(remaining, 1e-3))
        except TimeoutError:
            raise self._timed_out() from None
        finally:
            self._waiting -= 1

    def _timed_out(self) -> RequestError:
        return self._busy(
            f"timed out after {self._config.timeout_s:g}s waiting for the model", "timeout"
        )

    async def start(self, request: GenerateRequest, ids: list[int], arrived: float):
        """Begin generating; returns the SSE body once the first event is known (a slot and
        the first token within the request timeout, else 503)."""
        timeout = self._config.timeout_s
        await self._acquire(timeout - (time.perf_counter() - arrived))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()
        self._running.add(cancel)
        try:
            work = loop.run_in_executor(
                self._executor, self._produce, loop, queue, cancel, request, ids
            )
        except RuntimeError:  # the pool is shut down: the server is stopping
            self._running.discard(cancel)
            self._slots.release()
            raise self._busy("the server is stopping", "stopping") from None

        def finished(_) -> None:
            self._running.discard(cancel)
            self._slots.release()

        work.add_done_callback(finished)
        try:
            first = await asyncio.wait_for(
                queue.get(), max(timeout - (time.perf_counter() - arrived), 1e-3)
            )
        except TimeoutError:
            cancel.set()
            raise self._timed_out() from None
        except BaseException:  # cancelled: the client went away
            cancel.set()
            raise
        if first[0] == "error":
            cancel.set()
            raise first[1]
        return self._events(first, queue, cancel)

    def _produce(self, loop, queue, cancel: threading.Event, request: GenerateRequest, ids):
        """In a pool thread: generate, handing each token to the event loop."""

        def put(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        text = _TextStream(self.tokenizer)
        tokens = generate(
            self.bundle.model,
            ids,
            request.max_new_tokens,
            request.temperature,
            request.top_k,
            request.seed,
            self.context,
            stop_token=self.stop_token,
        )
        count = 0
        try:
            for token in tokens:
                if cancel.is_set():
                    return
                count += 1
                put("token", {"token": token, "text": text.add(token)})
            reason = "length" if count == request.max_new_tokens else "stop"
            done = {"done": True, "tokens": count, "finish_reason": reason, "text": text.rest()}
            put("done", done)
        except Exception as err:  # the model failed: the client gets one error event
            put("error", err)
        finally:
            tokens.close()

    async def _events(
        self, first: tuple[str, Any], queue: asyncio.Queue, cancel: threading.Event
    ) -> AsyncIterator[bytes]:
        item = first
        try:
            while True:
                kind, value = item
                if kind == "error":
                    message = f"internal error: {type(value).__name__}"
                    yield _event({"error": message})
                    return
                yield _event(value)
                if kind == "done":
                    return
                try:
                    item = await asyncio.wait_for(queue.get(), self._config.timeout_s)
                except TimeoutError:
                    self._metrics.rejected.labels("timeout").inc()
                    timeout = self._config.timeout_s
                    yield _event({"error": f"timed out after {timeout:g}s waiting for a token"})
                    return
        finally:
            cancel.set()  # the client went away or the stream ended: stop generating


def _event(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def generation_for(
    bundle: LoadedBundle, config: ServeConfig, metrics: Metrics
) -> Generation | None:
    """Generation when the bundle is a causal LM that carries its tokenizer, else None."""
    if bundle.task.name != "causal_lm" or not bundle.has_tokenizer:
        return None
    return Generation(bundle, config, metrics)
